//! Error scopes that leave a host's device untouched: validation,
//! out-of-memory and internal scopes around one call, always popped, in
//! reverse order, on every path.
//!
//! wgpu 30 panics ("error scopes must be popped in reverse order") when a
//! scope is popped while a newer one is still open, so the scopes are never
//! handed out: [`scoped`] and [`scoped_async`] push them, run the work, and
//! pop them whatever the work returned. No error handler is installed.

use std::future::Future;

use crate::{Error, Result};

/// The three scopes, innermost last. Fields drop in declaration order, so
/// an un-popped `Scopes` (a panic inside the work) still pops innermost
/// first.
struct Scopes {
    internal: wgpu::ErrorScopeGuard,
    memory: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
}

impl Scopes {
    fn push(device: &wgpu::Device) -> Scopes {
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        Scopes {
            internal,
            memory,
            validation,
        }
    }

    /// Pops all three, innermost first; the first error caught, out of
    /// memory first.
    async fn pop(self) -> Option<String> {
        let Scopes {
            internal,
            memory,
            validation,
        } = self;
        let internal = internal.pop().await;
        let memory = memory.pop().await;
        let validation = validation.pop().await;
        [memory, internal, validation]
            .into_iter()
            .flatten()
            .next()
            .map(|e| e.to_string())
    }
}

/// The error to return once the scopes are popped: a caught device error
/// wins (it is the cause; the work's own error is often its symptom), named
/// by `what`.
fn settle<T>(what: &str, caught: Option<String>, out: Result<T>) -> Result<T> {
    match caught {
        Some(e) => Err(Error::Gpu(format!("{what}: {e}"))),
        None => out,
    }
}

/// Runs `work` inside the scopes and pops them before returning, whether
/// `work` succeeded or failed. A device error caught by the scopes is
/// returned as [`Error::Gpu`] prefixed with `what`.
pub(crate) fn scoped<T>(
    device: &wgpu::Device,
    what: &str,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let scopes = Scopes::push(device);
    let out = work();
    let caught = pollster::block_on(scopes.pop());
    settle(what, caught, out)
}

/// [`scoped`] for asynchronous work.
pub(crate) async fn scoped_async<T>(
    device: &wgpu::Device,
    what: &str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let scopes = Scopes::push(device);
    let out = work.await;
    let caught = scopes.pop().await;
    settle(what, caught, out)
}
