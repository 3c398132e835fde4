//! How a command reads in a message: as it would be typed in a shell.

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

#[cfg(test)]
mod tests {
    use super::*;

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
