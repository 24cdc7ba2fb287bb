//! `table` and `wide` renderings of the responses: pure functions from a
//! message and a [`crate::output::Ctx`] to text, so they are tested without
//! a server or a terminal.

pub mod events;
pub mod schedules;
pub mod system;
pub mod tasks;
