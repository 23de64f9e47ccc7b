//! A recording [`Firewall`] for unit tests: it keeps the elements in memory, behaves like the
//! kernel table (conflicts name the holder, removals respect owners), records every call,
//! and fails the calls it is told to.

use std::cell::RefCell;

use crate::{Element, Error, Firewall, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    EnsureTable,
    Missing(Vec<Element>),
    Add(Vec<Element>),
    Remove(Vec<Element>),
    List,
}

#[derive(Default)]
pub struct Recording {
    pub elements: RefCell<Vec<Element>>,
    pub calls: RefCell<Vec<Call>>,
    /// Calls (by their name: "add", "remove", "missing", "list") that fail with EIO.
    pub fail: RefCell<Vec<&'static str>>,
    /// Whether the table exists (`ensure_table` creates it; a test may take it away).
    pub table: std::cell::Cell<bool>,
}

impl Recording {
    pub fn new() -> Recording {
        Recording::default()
    }

    fn call(&self, name: &'static str, call: Call) -> Result<()> {
        self.calls.borrow_mut().push(call);
        if self.fail.borrow().contains(&name) {
            return Err(Error::kernel(name, libc::EIO));
        }
        Ok(())
    }
}

/// Whether two elements occupy the same key.
fn same_key(a: &Element, b: &Element) -> bool {
    match (a, b) {
        (Element::Port { map: x, .. }, Element::Port { map: y, .. }) => {
            (x.proto, x.host_ip, x.host_port, x.target.is_ipv4())
                == (y.proto, y.host_ip, y.host_port, y.target.is_ipv4())
        }
        (Element::Hairpin { addr: x, .. }, Element::Hairpin { addr: y, .. }) => x == y,
        _ => a == b,
    }
}

impl Firewall for Recording {
    fn ensure_table(&self) -> Result<bool> {
        self.call("ensure_table", Call::EnsureTable)?;
        Ok(!self.table.replace(true))
    }

    fn missing(&self, elements: &[Element]) -> Result<Vec<Element>> {
        self.call("missing", Call::Missing(elements.to_vec()))?;
        let have = self.elements.borrow();
        Ok(elements.iter().filter(|e| !have.contains(e)).cloned().collect())
    }

    fn add(&self, elements: &[Element]) -> Result<()> {
        self.call("add", Call::Add(elements.to_vec()))?;
        let mut have = self.elements.borrow_mut();
        for e in elements {
            if let Some(h) = have.iter().find(|h| same_key(h, e) && h.owner() != e.owner()) {
                let mapping = match e {
                    Element::Port { map, .. } => map.to_string(),
                    other => other.to_string(),
                };
                return Err(Error::PortTaken { mapping, holder: h.owner().unwrap_or_default().into() });
            }
        }
        have.retain(|h| !elements.iter().any(|e| same_key(h, e)));
        have.extend(elements.iter().cloned());
        Ok(())
    }

    fn remove(&self, elements: &[Element]) -> Result<()> {
        self.call("remove", Call::Remove(elements.to_vec()))?;
        self.elements.borrow_mut().retain(|h| !elements.iter().any(|e| same_key(h, e) && h.owner() == e.owner()));
        Ok(())
    }

    fn list(&self) -> Result<Vec<Element>> {
        self.call("list", Call::List)?;
        Ok(self.elements.borrow().clone())
    }
}
