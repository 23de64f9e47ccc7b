//! calico-node's agent.
pub mod cluster;
mod error;
pub mod kernel;
pub mod local;
pub mod register;
pub mod routes;

pub use error::{Error, Result};

/// An error with its chain of causes, `a: b: c`, for logs and messages.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
