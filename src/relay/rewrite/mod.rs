//! Opt-in trace context propagation (`propagate_context = true`), the relay's half: the glue
//! around the pure rewriter of `wire::inject` (which bytes change, and how, is there). The
//! relay owns what is not pure: the hook that names each request ([`MintFn`], given by `app`,
//! so the relay knows nothing of spans or of the `traceparent` format) and the clock on held
//! bytes ([`MAX_HOLD_TIME`], run by `copy`).

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;

use crate::wire::inject::{self, GiveUpReason, Injection};

/// Longest a chunk's bytes may stay held back waiting for the rest of a head or header
/// block; the relay then forwards them unchanged and the rewriter gives up (a client that
/// waits for an answer in the middle of a head is not speaking a protocol we can follow).
pub const MAX_HOLD_TIME: Duration = Duration::from_secs(1);

/// The hook: new ids for one request and the `traceparent` value naming them.
pub type MintFn = fn() -> (Injection, String);

/// The rewriter of one connection: `wire::inject::Rewriter` with its hook.
pub struct Rewriter {
    inner: inject::Rewriter,
    mint: MintFn,
}

impl Rewriter {
    pub fn new(mint: MintFn) -> Rewriter {
        Rewriter {
            inner: inject::Rewriter::new(),
            mint,
        }
    }

    /// A chunk read from the client: the bytes to forward now; one [`Injection`] appended to
    /// `injected` per `traceparent` added, in order.
    pub fn client_bytes(&mut self, chunk: Bytes, injected: &mut Vec<Injection>) -> Bytes {
        self.inner.client_bytes(chunk, &mut self.mint, injected)
    }

    /// A chunk read from the server (read only).
    pub fn server_bytes(&mut self, chunk: &[u8]) {
        self.inner.server_bytes(chunk);
    }

    /// Bytes held back now.
    pub fn held(&self) -> usize {
        self.inner.held()
    }

    /// Passing every byte unchanged from now on, holding none (`wire::inject::Rewriter::passing`).
    pub fn passing(&self) -> bool {
        self.inner.passing()
    }

    /// Stop rewriting: every held byte, unchanged (`reason`: see `inject::Rewriter::release`).
    pub fn release(&mut self, reason: Option<GiveUpReason>) -> Bytes {
        self.inner.release(reason)
    }

    /// Why the rewriter gave up, returned once.
    pub fn take_give_up(&mut self) -> Option<GiveUpReason> {
        self.inner.take_give_up()
    }
}
