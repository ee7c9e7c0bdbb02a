//! The replica: one value per node that plays acceptor, leader and learner.
//!
//! (Stub: the public surface is fixed here; the implementation lands with the core.)

use crate::action::Action;
use crate::config::ConfigChange;
use crate::error::ProposeError;
use crate::event::Event;
use crate::ids::{ReadId, RequestId, Time};
use crate::message::Command;
use crate::options::Options;
use crate::status::{Counters, Status};

/// One replica of the replicated log.
#[derive(Debug)]
pub struct Replica {
    _options: Options,
}

impl Replica {
    /// A replica as set up by `options`, at time `now`.
    pub fn new(options: Options, now: Time) -> Self {
        let _ = now;
        Replica { _options: options }
    }

    /// Take one input.
    pub fn handle(&mut self, now: Time, event: Event) {
        let _ = (now, event);
        todo!()
    }

    /// Time has reached the deadline given by [`Replica::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Time) {
        let _ = now;
        todo!()
    }

    /// Propose a client command (leader only).
    pub fn propose(&mut self, now: Time, command: Command) -> Result<(), ProposeError> {
        let _ = (now, command);
        todo!()
    }

    /// Propose a membership change (leader only; one at a time).
    pub fn propose_config(&mut self, now: Time, id: RequestId, change: ConfigChange) -> Result<(), ProposeError> {
        let _ = (now, id, change);
        todo!()
    }

    /// Start (or join) a leadership confirmation for a linearizable read (leader only). The
    /// outcome comes as `Action::ReadsReady` or `Action::ReadsFailed`.
    pub fn read(&mut self, now: Time, read: ReadId) -> Result<(), ProposeError> {
        let _ = (now, read);
        todo!()
    }

    /// The next effect to run, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }

    /// When to call [`Replica::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        todo!()
    }

    /// The replica's state, for status pages.
    pub fn status(&self) -> Status {
        todo!()
    }

    /// Counters of what happened.
    pub fn counters(&self) -> Counters {
        todo!()
    }
}
