//! Confirmation of irreversible commands: `--yes`, or typing the tenant's ref at a prompt when
//! stdin is a terminal. A script (no terminal) that forgot `--yes` is refused before anything is
//! done, so a pasted command line cannot offboard or erase by accident.

use std::io::{BufRead, IsTerminal, Write};

use wafleet_fleet::error::{InvalidInput, Result};

/// Succeeds when `yes` was given, or when the operator types `customer_ref` at the prompt; a
/// run without a terminal on stdin is refused with one line saying to add `--yes`.
pub fn confirm(yes: bool, action: &str, customer_ref: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(InvalidInput::Unconfirmed { action: action.to_owned() }.into());
    }
    let mut stderr = std::io::stderr();
    // The prompt goes to stderr so stdout stays the command's output.
    let _ = write!(stderr, "{action} cannot be undone. Type the tenant ref ({customer_ref}) to go on: ");
    let _ = stderr.flush();
    let mut typed = String::new();
    // A read error or end of input counts as a refusal, like a wrong answer.
    let _ = stdin.lock().read_line(&mut typed);
    check_answer(&typed, customer_ref)
}

fn check_answer(typed: &str, customer_ref: &str) -> Result<()> {
    if typed.trim() == customer_ref {
        Ok(())
    } else {
        Err(InvalidInput::ConfirmationMismatch { expected: customer_ref.to_owned() }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_ref_confirms() {
        assert!(check_answer("acme\n", "acme").is_ok());
        assert!(check_answer("  acme \r\n", "acme").is_ok());
        for wrong in ["", "\n", "y\n", "yes\n", "acm\n", "ACME\n", "acme2\n"] {
            assert!(check_answer(wrong, "acme").is_err(), "{wrong:?} must not confirm");
        }
    }

    #[test]
    fn yes_confirms_without_asking() {
        assert!(confirm(true, "offboarding tenant acme", "acme").is_ok());
    }
}
