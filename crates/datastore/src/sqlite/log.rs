//! The change log's row format: one row per commit (`log`: revision, keys), whose `keys`
//! lists the keys that commit wrote, each with whether it was deleted.
//!
//! `keys` is a BLOB of entries, each a kind byte (0 put, 1 delete), the key's length in bytes
//! (u32, little endian) and the key's UTF-8 bytes. A key appears once per commit, with the
//! last thing the commit did to it.

/// One key a commit wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Change<'k> {
    pub key: &'k str,
    pub deleted: bool,
}

/// The changes of one commit, in the order given, the last one of each key kept.
pub(super) fn encode(changes: &[Change<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(changes.iter().map(|c| 5 + c.key.len()).sum());
    for (i, change) in changes.iter().enumerate() {
        if changes[i + 1..].iter().any(|later| later.key == change.key) {
            continue;
        }
        out.push(u8::from(change.deleted));
        // Keys are far shorter than 4 GiB: SQLite's own limit on a value is 1 GB.
        out.extend_from_slice(&(change.key.len() as u32).to_le_bytes());
        out.extend_from_slice(change.key.as_bytes());
    }
    out
}

/// The changes in `keys`, or `None` when it is not what [`encode`] writes.
pub(super) fn decode(mut keys: &[u8]) -> Option<Vec<Change<'_>>> {
    let mut changes = Vec::new();
    while !keys.is_empty() {
        let deleted = match keys.first()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let len = u32::from_le_bytes(keys.get(1..5)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(keys.get(5..5usize.checked_add(len)?)?).ok()?;
        changes.push(Change { key, deleted });
        keys = &keys[5 + len..];
    }
    Some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_last_change_of_a_key() {
        let put = |key| Change { key, deleted: false };
        let del = |key| Change { key, deleted: true };
        let bytes = encode(&[put("/a"), del("/b"), del("/a"), put("é\0\n")]);
        assert_eq!(decode(&bytes).unwrap(), [del("/b"), del("/a"), put("é\0\n")]);
        assert_eq!(decode(&encode(&[])).unwrap(), []);
    }

    #[test]
    fn anything_else_is_refused() {
        let good = encode(&[Change { key: "/k", deleted: false }]);
        assert!(decode(&good[..good.len() - 1]).is_none(), "truncated");
        assert!(decode(&[2, 0, 0, 0, 0]).is_none(), "unknown kind");
        assert!(decode(&[0, 1, 0, 0, 0, 0xff]).is_none(), "not UTF-8");
        assert!(decode(&[0, 0xff, 0xff, 0xff, 0xff]).is_none(), "longer than the blob");
    }
}
