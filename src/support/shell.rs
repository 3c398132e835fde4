//! How a command, and what it printed, read in a message: the command as it
//! would be typed in a shell, its output as plain text on one line.

use std::process::Command;

/// `cmd` as one line: the variables it sets, the program and its arguments,
/// an empty argument or one with a space in single quotes.
pub fn show(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(' ') {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push_str(&format!(" {a}"));
        }
    }
    s
}

/// What a program printed, fit to quote in a one-line message: terminal
/// escapes (colours, cursor moves, window titles) and other control
/// characters removed, lines trimmed and joined by a space, empty ones left
/// out.
pub fn plain_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // A two-character escape: its second character goes too.
                _ => {}
            },
            '\n' => plain.push('\n'),
            c if c.is_control() => {}
            c => plain.push(c),
        }
    }
    plain
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // As Nix prints an error on a terminal, colours and all.
    #[test]
    fn plain_text_drops_escapes_and_joins_lines() {
        let printed = b"\x1b[31;1merror:\x1b[0m opening lock file '\x1b[35;1m/nix/var/nix/db/big-lock\x1b[0m': Permission denied\n\x1b]0;title\x07\r\n  more\t \n";
        assert_eq!(
            plain_text(printed),
            "error: opening lock file '/nix/var/nix/db/big-lock': Permission denied more"
        );
    }

    #[test]
    fn plain_text_keeps_non_ascii_and_ends_at_a_cut_escape() {
        assert_eq!(plain_text("café \x1b[1".as_bytes()), "café");
        assert_eq!(plain_text(b"a\x1b]2;t\x1b\\b"), "ab");
    }

    #[test]
    fn shows_variables_program_and_quoted_arguments() {
        let mut cmd = Command::new("nix");
        cmd.env("NIX_CONF_DIR", "/etc/nix")
            .args(["path-info", "", "/tmp/a b"]);
        assert_eq!(
            show(&cmd),
            "NIX_CONF_DIR=/etc/nix nix path-info '' '/tmp/a b'"
        );
    }
}
