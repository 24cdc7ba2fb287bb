//! The real `ipactl` binary against real servers: every command's output
//! in each format (JSON and YAML parsed back), exit codes and error lines,
//! streams (events watch, logs -f), what a terminal sees (colour, spinner)
//! versus a pipe, shell completions, and the bearer token on the wire.

mod commands;
mod dependencies;
mod errors;
mod queue;
mod schedules;
mod streams;
pub mod support;
mod terminal;
mod token;
