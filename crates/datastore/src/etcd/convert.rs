//! Translations between the trait's types and etcd's, and the reading of etcd-client errors:
//! which ones mean "unavailable", which ones prove a request never left, how to word them.

use std::error::Error as StdError;
use std::io;

use etcd_client::{
    Compare as EtcdCompare, CompareOp, Error as EtcdError, GetOptions, GetResponse, Txn, TxnOp,
};
use tonic::Code;

use crate::{Compare, Error, KeyValue, Op, Read};

/// One etcd Txn: every compare in the `when` branch, every write in the `then` branch.
pub(super) fn txn(compares: &[Compare], ops: &[Op]) -> Txn {
    let compares: Vec<EtcdCompare> = compares
        .iter()
        .map(|c| match c {
            Compare::Absent(key) => EtcdCompare::version(key.as_str(), CompareOp::Equal, 0),
            Compare::Revision(key, rev) => {
                EtcdCompare::mod_revision(key.as_str(), CompareOp::Equal, *rev)
            }
        })
        .collect();
    let ops: Vec<TxnOp> = ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => TxnOp::put(key.as_str(), value.clone(), None),
            Op::Delete { key } => TxnOp::delete(key.as_str(), None),
        })
        .collect();
    Txn::new().when(compares).and_then(ops)
}

/// A read-only Txn answering every read of a batch in one round trip.
pub(super) fn read_txn(reads: &[Read]) -> Txn {
    let ops: Vec<TxnOp> = reads
        .iter()
        .map(|r| match r {
            Read::Key(key) => TxnOp::get(key.as_str(), None),
            Read::Prefix(prefix) => TxnOp::get(prefix.as_str(), Some(prefix_options())),
        })
        .collect();
    Txn::new().and_then(ops)
}

/// A range over every key starting with the request's key, in key order (etcd's default).
pub(super) fn prefix_options() -> GetOptions {
    GetOptions::new().with_prefix()
}

/// The keys of a range response, checked to be UTF-8 as the trait's keys are.
pub(super) fn key_values(mut resp: GetResponse) -> Result<Vec<KeyValue>, Error> {
    resp.take_kvs()
        .into_iter()
        .map(|kv| {
            let mod_revision = kv.mod_revision();
            let (key, value) = kv.into_key_value();
            let key = String::from_utf8(key).map_err(|e| {
                Error::Protocol(format!(
                    "etcd key {:?} is not UTF-8",
                    String::from_utf8_lossy(e.as_bytes())
                ))
            })?;
            Ok(KeyValue {
                key,
                value,
                mod_revision,
            })
        })
        .collect()
}

/// Whether an etcd-client error means "try again later": the member could not be reached, did
/// not answer in time, or has no quorum. TLS failures are excluded: they need a fix, not a retry.
pub(super) fn is_unavailable(err: &EtcdError) -> bool {
    if is_tls_failure(err) {
        return false;
    }
    match err {
        EtcdError::TransportError(_) | EtcdError::IoError(_) => true,
        EtcdError::GRpcStatus(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted => true,
            // Made on this side from a broken connection (it then carries its cause), rather
            // than sent by the server.
            Code::Unknown | Code::Internal | Code::Cancelled => status.source().is_some(),
            _ => false,
        },
        _ => false,
    }
}

/// True when the request provably never reached a server, so that a write may be resent to
/// another member without risking a double apply: the failure happened while connecting, or
/// hyper gave the request back unsent because its connection had closed ("canceled").
pub(super) fn never_sent(err: &EtcdError) -> bool {
    matches!(err, EtcdError::TransportError(_))
        || chain(err).any(|e| {
            e.downcast_ref::<tonic::ConnectError>().is_some()
                || e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_canceled)
        })
}

/// True for an answer of the server (a gRPC status it sent), false for a failure on this side.
pub(super) fn from_server(err: &EtcdError) -> bool {
    matches!(err, EtcdError::GRpcStatus(status) if status.source().is_none())
}

/// True when the connection broke under the request: hyper gave it back unsent, or the socket
/// was closed or reset by the server.
pub(super) fn closed_early(err: &EtcdError) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
            || e.downcast_ref::<io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::UnexpectedEof
                )
            })
    })
}

/// rustls reports handshake failures (unknown CA, certificate rejected by the server) as I/O
/// errors of kind `InvalidData`.
fn is_tls_failure(err: &EtcdError) -> bool {
    chain(err).any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::InvalidData)
    })
}

/// Every message of the cause chain, joined, without the repeats that the layers add
/// ("transport error: transport error: ..."). A status the server sent keeps its code.
pub(super) fn detail(err: &EtcdError) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !matches!(
        err,
        EtcdError::TransportError(_) | EtcdError::GRpcStatus(_) | EtcdError::IoError(_)
    ) {
        parts.push(err.to_string());
    }
    for cause in chain(err) {
        let msg = match cause.downcast_ref::<tonic::Status>() {
            Some(status) if status.source().is_none() => {
                format!("{:?}: {}", status.code(), status.message())
            }
            Some(status) => status.message().to_owned(),
            None => cause.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
    }
    let mut text = parts.join(": ");
    if is_tls_failure(err) {
        text.push_str(
            " (TLS handshake failed: check etcd_ca_cert_file, etcd_cert_file and etcd_key_file)",
        );
    }
    text
}

/// The error and its causes. `etcd_client::Error` does not expose its inner error as
/// `source()`, so the walk starts from the wrapped error.
fn chain(err: &EtcdError) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    let inner: &(dyn StdError + 'static) = match err {
        EtcdError::TransportError(e) => e,
        EtcdError::GRpcStatus(e) => e,
        EtcdError::IoError(e) => e,
        other => other,
    };
    std::iter::successors(Some(inner), |e: &&(dyn StdError + 'static)| (*e).source())
}
