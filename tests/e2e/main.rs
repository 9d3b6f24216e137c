//! End-to-end tests against real `docker-registry` processes started by the tests.

mod architecture;
mod auth;
mod cluster;
mod daemon;
mod events;
mod fanout;
mod hostile;
mod layout;
mod limits;
mod notify;
mod page;
mod policies;
mod resume;
mod state;
mod support;
mod sync;
mod terminal;
mod transports;
mod validate;
