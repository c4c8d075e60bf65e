//! Getting secrets from the user: the keystore passphrase and, on restore, the seed words.
//!
//! Passphrase sources, first match wins:
//! 1. `--passphrase-file FILE` / `M2M_PASSPHRASE_FILE` (e.g. a systemd credential);
//! 2. the `M2M_PASSPHRASE` environment variable, for unattended devices — anything that can read
//!    the process environment (same user, root, crash dumps) can read it, so prefer a file;
//! 3. a hidden prompt on the controlling terminal (twice when creating a keystore).

use std::io::{IsTerminal, Read};

use m2m_wallet::{DeviceSeed, Passphrase};
use zeroize::Zeroizing;

use super::{CliError, GlobalArgs};

/// Environment variable holding the passphrase for unattended devices.
pub const PASSPHRASE_ENV: &str = "M2M_PASSPHRASE";

/// Whether the passphrase is for a new keystore (confirm it) or an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Create,
    Open,
}

pub(super) fn passphrase(global: &GlobalArgs, purpose: Purpose) -> Result<Passphrase, CliError> {
    if let Some(path) = &global.passphrase_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "cannot read passphrase file {}: {e}",
                path.display()
            ))
        })?;
        let text = Zeroizing::new(text);
        let first_line = text.lines().next().unwrap_or_default().to_string();
        return Ok(Passphrase::new(first_line)?);
    }
    if let Some(text) = std::env::var_os(PASSPHRASE_ENV) {
        let text = text
            .into_string()
            .map_err(|_| CliError::Usage(format!("{PASSPHRASE_ENV} is not valid UTF-8")))?;
        return Ok(Passphrase::new(text)?);
    }
    let no_terminal = |e: std::io::Error| {
        CliError::Usage(format!(
            "no passphrase: set {PASSPHRASE_ENV}, pass --passphrase-file, or run in a terminal ({e})"
        ))
    };
    let first =
        Zeroizing::new(rpassword::prompt_password("Keystore passphrase: ").map_err(no_terminal)?);
    if purpose == Purpose::Create {
        let again =
            Zeroizing::new(rpassword::prompt_password("Repeat passphrase: ").map_err(no_terminal)?);
        if *first != *again {
            return Err(CliError::Usage(
                "the two passphrases differ; nothing was created".into(),
            ));
        }
    }
    Ok(Passphrase::new(first.to_string())?)
}

/// Reads seed words for a restore: a hidden prompt on a terminal, else all of stdin.
pub(super) fn seed_words() -> Result<DeviceSeed, CliError> {
    let stdin = std::io::stdin();
    let words = if stdin.is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password("Seed words (hidden): ").map_err(CliError::Terminal)?,
        )
    } else {
        let mut text = Zeroizing::new(String::new());
        stdin
            .lock()
            .read_to_string(&mut text)
            .map_err(CliError::Terminal)?;
        text
    };
    Ok(DeviceSeed::from_phrase(&words)?)
}
