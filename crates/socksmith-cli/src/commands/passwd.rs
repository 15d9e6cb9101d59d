//! `socksmith passwd FILE USER`: adds a user to a users file (`serve --users FILE`) or sets
//! a new password for one; `socksmith passwd --delete FILE USER` removes one.
//!
//! The password comes from the first line of standard input when that is not a terminal
//! (`echo "$PW" | socksmith passwd users alice`), otherwise it is asked for twice without
//! echo. Only its argon2id hash is written. The file is replaced atomically: the new content
//! goes to a temporary file in the same directory (mode 0600, synced), which is then renamed
//! over the old one, so a reader sees the old file or the new one, never half of one. Parsing
//! and hashing are the library's ([`socksmith::server::UsersFile`],
//! [`socksmith::server::hash_password`]); this module reads the password and writes the file.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use socksmith::server::{hash_password, UsersFile};

/// Arguments of `socksmith passwd`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remove USER instead of setting a password.
    #[arg(long)]
    delete: bool,

    /// The users file (created when missing, for adding). One `NAME:HASH` a line.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// The user to add, change or remove.
    #[arg(value_name = "USER")]
    user: String,
}

/// Runs `socksmith passwd`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut file = match UsersFile::load(&args.file) {
        Ok(file) => file,
        Err(socksmith::server::UsersFileError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && !args.delete =>
        {
            UsersFile::new()
        }
        Err(e) => return Err(e.into()),
    };
    let message = if args.delete {
        if !file.remove(&args.user) {
            bail!("no user {:?} in {}", args.user, args.file.display());
        }
        format!("removed user {:?} from {}", args.user, args.file.display())
    } else {
        let password = read_password(&args.user)?;
        let hash = hash_password(password.as_bytes()).context("hashing the password")?;
        let replaced = file
            .set(&args.user, &hash)
            .with_context(|| format!("user {:?}", args.user))?;
        let verb = if replaced { "changed" } else { "added" };
        format!("{verb} user {:?} in {}", args.user, args.file.display())
    };
    write_atomically(&args.file, file.render().as_bytes())
        .with_context(|| format!("writing {}", args.file.display()))?;
    eprintln!("socksmith passwd: {message}");
    Ok(ExitCode::SUCCESS)
}

/// The first line of stdin when it is not a terminal, else asked for twice on the terminal.
fn read_password(user: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {user}: "))
            .context("reading the password from the terminal")?;
        let second = rpassword::prompt_password("Repeat it: ")
            .context("reading the password from the terminal")?;
        if first != second {
            bail!("the two passwords differ; nothing changed");
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        line.strip_suffix('\r').unwrap_or(line).to_owned()
    };
    if password.is_empty() {
        bail!("empty password: give one on the first line of standard input, or type it");
    }
    if password.len() > 255 {
        bail!(
            "password of {} bytes: SOCKS5 (RFC 1929) carries at most 255",
            password.len()
        );
    }
    Ok(password)
}

/// Writes `content` to a temporary file beside `path` (mode 0600), syncs it, renames it over
/// `path` and syncs the directory, so a crash leaves the old file or the new one.
fn write_atomically(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".socksmith-passwd-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    temp.write_all(content)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}
