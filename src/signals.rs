//! The one place that turns Unix signals into what ferry does about them.
//!
//! - SIGINT, SIGTERM: [`Signal::Stop`]: stop starting work, let each chunk in flight finish
//!   and be checkpointed. A second one while stopping is [`Signal::Abort`]: leave now (the
//!   saved checkpoints still hold).
//! - SIGHUP: [`Signal::Reload`] (the daemon re-reads its config; `ferry sync` ignores it).

use tokio::signal::unix::{signal, SignalKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Stop,
    /// A second stop signal: do not wait for anything.
    Abort,
    Reload,
}

pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    stopping: bool,
}

impl Signals {
    /// Take over SIGINT, SIGTERM and SIGHUP from now on.
    ///
    /// # Errors
    /// When the handlers cannot be installed.
    pub fn new() -> std::io::Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            stopping: false,
        })
    }

    /// The next signal, as what to do.
    pub async fn next(&mut self) -> Signal {
        let stop = tokio::select! {
            _ = self.int.recv() => true,
            _ = self.term.recv() => true,
            _ = self.hup.recv() => false,
        };
        if !stop {
            return Signal::Reload;
        }
        if std::mem::replace(&mut self.stopping, true) {
            Signal::Abort
        } else {
            Signal::Stop
        }
    }

    /// The next stop (or abort), ignoring reloads.
    pub async fn stop(&mut self) -> Signal {
        loop {
            match self.next().await {
                Signal::Reload => continue,
                s => return s,
            }
        }
    }
}
