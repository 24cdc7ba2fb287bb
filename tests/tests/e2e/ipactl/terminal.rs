//! What a person at a terminal sees versus a pipe, through a real
//! pseudo-terminal (util-linux `script`): colour and the `tasks wait`
//! spinner on a terminal only, and never colour with NO_COLOR.

use super::support::System;

/// An SGR (colour/bold) escape sequence: ESC [ … m.
fn has_sgr(s: &str) -> bool {
    let mut rest = s;
    while let Some(i) = rest.find("\u{1b}[") {
        let tail = &rest[i + 2..];
        let end = tail.find(|c: char| !(c.is_ascii_digit() || c == ';'));
        if let Some(e) = end
            && tail[e..].starts_with('m')
        {
            return true;
        }
        rest = tail;
    }
    false
}

#[test]
fn sgr_detection() {
    assert!(has_sgr("a\u{1b}[1;31mError\u{1b}[0m"));
    assert!(!has_sgr("plain\u{1b}[2K\r"));
    assert!(!has_sgr("plain"));
}

#[tokio::test]
async fn colour_and_spinner_on_a_terminal_only() {
    let sys = System::start().await;
    let ctl = &sys.ipactl;
    let id = sys.create("terminal", 200, true).await;

    // On a terminal: coloured, bold headers, aligned.
    let tty = ctl.in_terminal(&["tasks", "list"], 120, &[]).await;
    assert_eq!(tty.code, Some(0), "{tty:#?}");
    assert!(
        has_sgr(&tty.stdout),
        "colour on a terminal: {:?}",
        tty.stdout
    );
    assert!(tty.stdout.contains(&id));

    // NO_COLOR on a terminal: the same table without any colour.
    let plain = ctl
        .in_terminal(&["tasks", "list"], 120, &[("NO_COLOR", "1")])
        .await;
    assert_eq!(plain.code, Some(0), "{plain:#?}");
    assert!(!has_sgr(&plain.stdout), "NO_COLOR: {:?}", plain.stdout);
    assert!(plain.stdout.contains(&id));
    // An empty NO_COLOR does not count (no-color.org).
    let empty = ctl
        .in_terminal(&["tasks", "list"], 120, &[("NO_COLOR", "")])
        .await;
    assert!(has_sgr(&empty.stdout));

    // In a pipe: no escape codes at all.
    let piped = ctl.run(&["tasks", "list"]).await;
    assert!(!piped.ok().contains('\u{1b}'));

    // The spinner of `tasks wait` draws on the terminal...
    let slow = sys.create("slow", 400, true).await;
    let waited = ctl
        .in_terminal(
            &[
                "tasks",
                "wait",
                &slow,
                "--for",
                "completed",
                "--timeout",
                "60s",
            ],
            120,
            &[("NO_COLOR", "1")],
        )
        .await;
    assert_eq!(waited.code, Some(0), "{waited:#?}");
    assert!(
        waited.stdout.contains("waiting for completed"),
        "spinner on a terminal: {:?}",
        waited.stdout
    );
    // ...without colour under NO_COLOR, and ends with the task.
    assert!(!has_sgr(&waited.stdout), "{:?}", waited.stdout);
    assert!(waited.stdout.contains("completed"));
    // ...and never in a pipe.
    let piped = ctl
        .run(&[
            "tasks",
            "wait",
            &slow,
            "--for",
            "completed",
            "--timeout",
            "60s",
        ])
        .await;
    assert!(!piped.stderr.contains("waiting for"), "{piped:#?}");

    // Errors on a terminal: `Error:` in colour, the same words.
    let err = ctl
        .in_terminal(
            &["tasks", "get", "0b6f5a4e-8d7c-4b3a-9e21-5f0c7d8e9a10"],
            120,
            &[],
        )
        .await;
    assert_eq!(err.code, Some(1), "{err:#?}");
    assert!(has_sgr(&err.stdout) && err.stdout.contains("TASK_NOT_FOUND: "));
}
