//! Where results go and in which shape: `table`/`wide` through the views
//! (aligned columns, colour only on a terminal and never with NO_COLOR),
//! `json`/`yaml` as the RPC's response message with the proto's JSON names.
//! Streams print one item at a time: a table row, one JSON object per line,
//! or one YAML document each.

pub mod fmt;
pub mod proto_json;

use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use crate::cli::Format;
use crate::error::CliError;
pub use proto_json::Named;

/// What the views need to render: wide or not, colour or not, and "now"
/// for relative times (an input, so views are testable).
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub wide: bool,
    pub color: bool,
    pub now: SystemTime,
}

/// Prints results to stdout in the chosen format.
pub struct Output {
    format: Format,
    ctx: Ctx,
}

impl Output {
    /// Output to this process's stdout; colour when it is a terminal and
    /// NO_COLOR is unset or empty.
    pub fn new(format: Format) -> Self {
        let color = std::io::stdout().is_terminal() && color_allowed();
        Self {
            format,
            ctx: Ctx {
                wide: format == Format::Wide,
                color,
                now: SystemTime::now(),
            },
        }
    }

    /// The chosen format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The rendering context of the views.
    pub fn ctx(&self) -> Ctx {
        Ctx {
            now: SystemTime::now(),
            ..self.ctx
        }
    }

    /// Prints a response: `json`/`yaml` as the message itself, `table` and
    /// `wide` as `view` renders it.
    pub fn message<M: Named>(
        &self,
        msg: &M,
        view: impl FnOnce(&Ctx) -> String,
    ) -> Result<(), CliError> {
        let text = match self.format {
            Format::Json => proto_json::to_json(msg, true)?,
            Format::Yaml => proto_json::to_yaml(msg)?,
            Format::Table | Format::Wide => view(&self.ctx()),
        };
        write_out(&text)
    }

    /// Prints one item of a stream and flushes: a JSON object on one line,
    /// a YAML document, or the view's row.
    pub fn stream_item<M: Named>(
        &self,
        msg: &M,
        view: impl FnOnce(&Ctx) -> String,
    ) -> Result<(), CliError> {
        let text = match self.format {
            Format::Json => proto_json::to_json(msg, false)?,
            Format::Yaml => format!("---\n{}", proto_json::to_yaml(msg)?),
            Format::Table | Format::Wide => view(&self.ctx()),
        };
        write_out(&text)
    }

    /// Prints text as it is (e.g. a count, a header row).
    pub fn text(&self, text: &str) -> Result<(), CliError> {
        write_out(text)
    }
}

/// NO_COLOR (https://no-color.org): present and not empty disables colour.
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes `text` and a final newline if missing, then flushes (streams
/// must show up at once in a pipe).
fn write_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Writes raw bytes (pod logs) and flushes.
pub fn write_raw(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}
