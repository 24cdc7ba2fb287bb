//! `ipactl`: the command-line client of the IPA task manager (docs/api.md
//! lists every command). Parses the command line, runs the command, and
//! turns the outcome into an exit code: 0 on success, 1 on an error
//! (printed as `Error: REASON: sentence`), 2 on a usage error (clap).

mod cli;
mod commands;
mod connect;
mod error;
mod output;
mod views;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        // Rendered into memory first: clap_complete panics on a failed
        // write, and `ipactl completion bash | head` closes the pipe.
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::from(shell),
            &mut Cli::command(),
            "ipactl",
            &mut script,
        );
        return match output::write_raw(&script) {
            Ok(()) | Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        };
    }
    // One thread is plenty for one client and keeps start-up cheap.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return report(&CliError::Output(format!("cannot start the runtime: {e}"))),
    };
    let out = output::Output::new(cli.global.output);
    let result = runtime.block_on(async {
        let conn = connect::Conn::open(&cli.global)?;
        tokio::select! {
            r = commands::run(&conn, &out, cli.command) => r,
            // Ctrl-C ends a watch or a follow: a normal way to stop.
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`ipactl events watch | head`): not an error.
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Prints `Error: REASON: sentence` on stderr (`Error:` in red on a
/// terminal) and returns exit code 1.
fn report(e: &CliError) -> ExitCode {
    let color = std::io::stderr().is_terminal() && output::color_allowed();
    let label = if color {
        "\u{1b}[1;31mError:\u{1b}[0m"
    } else {
        "Error:"
    };
    let _ = writeln!(std::io::stderr(), "{label} {e}");
    ExitCode::from(1)
}
