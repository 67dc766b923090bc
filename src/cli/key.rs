//! `pbio key new FILE` and the `--key FILE` option: the secret whose MACs
//! authenticate a set (docs/FORMAT.md, "MAC"). A set written with a key
//! carries a keyed BLAKE3 MAC in every label and in its catalog; restore,
//! verify and list given the key refuse a set whose MACs do not match.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{CliResult, Failure, Outcome};
use crate::format::{mac_key, MacKey, KEY_FILE_BYTES_MIN};

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write a new key: 32 random bytes from the kernel, into a file that
    /// must not exist yet (created with mode 0600). Keep a copy: a set
    /// written with it can only be checked with it.
    New {
        /// The key file to create.
        file: PathBuf,
    },
}

/// Bytes of a key `pbio key new` writes.
const NEW_KEY_BYTES: usize = 32;
/// Largest key file read (a key is a secret, not a document).
const KEY_FILE_BYTES_MAX: u64 = 1 << 20;

pub fn run(command: KeyCommand) -> CliResult {
    match command {
        KeyCommand::New { file } => new_key(&file),
    }
}

fn new_key(path: &Path) -> CliResult {
    let mut key = [0u8; NEW_KEY_BYTES];
    crate::media::fill_random(&mut key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::Usage(format!(
                    "key new {}: the file exists; refusing to overwrite a key",
                    path.display()
                ))
            } else {
                Failure::Usage(format!("key new {}: {e}", path.display()))
            }
        })?;
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::Data(format!("key new {}: write: {e}", path.display())))?;
    outln!(
        "wrote a new {NEW_KEY_BYTES}-byte key to {} (mode 0600): give it as --key to backup, restore, verify and list",
        path.display()
    );
    Ok(Outcome::Done)
}

/// The MAC key of `--key FILE`: derived from the file's contents, which
/// must hold at least `KEY_FILE_BYTES_MIN` bytes (a usage error naming
/// the file otherwise).
pub fn load(path: &Path) -> Result<MacKey, Failure> {
    let usage = |why: String| Failure::Usage(format!("--key {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| usage(e.to_string()))?;
    let mut contents = Vec::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut contents)
        .map_err(|e| usage(e.to_string()))?;
    if contents.len() < KEY_FILE_BYTES_MIN {
        return Err(usage(format!(
            "holds {} bytes; a key file needs at least {KEY_FILE_BYTES_MIN} (make one with `pbio key new FILE`)",
            contents.len()
        )));
    }
    if contents.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(usage(format!(
            "larger than {KEY_FILE_BYTES_MAX} bytes: not a key file"
        )));
    }
    Ok(mac_key(&contents))
}

/// `load` of an optional `--key`.
pub fn load_optional(path: Option<&Path>) -> Result<Option<MacKey>, Failure> {
    path.map(load).transpose()
}
