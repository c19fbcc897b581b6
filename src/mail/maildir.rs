//! A Maildir: each message is written to `tmp/`, flushed to disk, then renamed into `new/`
//! as `<message-id-hash>.eml`. A resend of the same occasion overwrites the same file, so the
//! folder never holds a duplicate.

use super::{Accepted, FailureClass, SendError};
use std::path::PathBuf;

pub struct MaildirMailer {
    /// The Maildir root (with tmp/, new/, cur/).
    root: PathBuf,
}

impl MaildirMailer {
    pub fn new(root: PathBuf) -> anyhow::Result<Self> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(root.join(sub))
                .map_err(|e| anyhow::anyhow!("cannot create Maildir {}: {e}", root.join(sub).display()))?;
        }
        Ok(Self { root })
    }

    pub fn describe(&self) -> String {
        format!("maildir {}", self.root.display())
    }

    pub async fn send(&self, message: &lettre::Message) -> Result<Accepted, SendError> {
        let id = message
            .headers()
            .get_raw("Message-ID")
            .map(|v| v.trim_matches(|c| c == '<' || c == '>').replace(['/', '\\'], "_"))
            .unwrap_or_else(|| format!("{}", std::process::id()));
        let name = format!("{id}.eml");
        let tmp = self.root.join("tmp").join(&name);
        let new = self.root.join("new").join(&name);
        let bytes = message.formatted();
        let io = |e: std::io::Error| SendError {
            class: FailureClass::Transient,
            detail: format!("maildir write failed: {e}"),
        };
        let (tmp2, new2) = (tmp.clone(), new.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp2)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp2, &new2)?;
            if let Some(dir) = new2.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| SendError { class: FailureClass::Transient, detail: format!("maildir task failed: {e}") })?
        .map_err(io)?;
        Ok(Accepted { reply: format!("maildir new/{name}") })
    }
}
