//! A mosquitto MQTT broker on a free loopback port, as deployed: TLS only (a throwaway CA and a
//! server certificate made for this broker), password accounts (no anonymous clients), a topic
//! ACL per account, and persistence (a restart keeps sessions and queued messages).
//!
//! mosquitto comes from Debian (package `mosquitto`, which also ships `mosquitto_passwd`),
//! installed when missing. The broker is registered with the reaper, so it dies with this
//! process however that ends; [`MosquittoHandle::restart`] stops and starts it on the same port
//! and state, for tests of a broker restart mid-stream.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ToolError, free_port};

const PURPOSE: &str = "the MQTT broker (mosquitto)";

/// One account of the broker and the topics it may use.
#[derive(Debug, Clone)]
pub struct MqttAccount {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// ACL lines for this user, in mosquitto's form: `read a/#`, `write a/b`, `readwrite c/+`.
    pub topics: Vec<String>,
}

/// A running broker. Dropping it stops the broker and removes its files.
#[derive(Debug)]
pub struct MosquittoHandle {
    server: super::served::Server,
    ca_pem: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ToolError + '_ {
    move |source| ToolError::Io {
        path: path.to_owned(),
        source,
    }
}

fn find(program: &str) -> Option<PathBuf> {
    super::on_path(program, &["/usr/sbin", "/usr/bin"])
}

/// `mosquitto` and `mosquitto_passwd`, installed from Debian when missing.
fn ensure() -> Result<(PathBuf, PathBuf), ToolError> {
    let found = || Some((find("mosquitto")?, find("mosquitto_passwd")?));
    if let Some(pair) = found() {
        return Ok(pair);
    }
    super::ensure_packages(PURPOSE, &["mosquitto"])?;
    found().ok_or(ToolError::MissingPackages {
        purpose: PURPOSE,
        packages: "mosquitto".into(),
    })
}

/// `mosquitto_sub`, the broker's command-line subscriber (Debian `mosquitto-clients`), installed
/// when missing: what an operator, or an eavesdropper with an account, reads a topic with.
pub fn mosquitto_sub() -> Result<PathBuf, ToolError> {
    const CLIENTS: &str = "the MQTT command-line clients (mosquitto_sub)";
    if let Some(path) = find("mosquitto_sub") {
        return Ok(path);
    }
    super::ensure_packages(CLIENTS, &["mosquitto-clients"])?;
    find("mosquitto_sub").ok_or(ToolError::MissingPackages {
        purpose: CLIENTS,
        packages: "mosquitto-clients".into(),
    })
}

/// Starts a broker with `accounts` on a free loopback port and waits until it accepts
/// connections.
pub async fn start_mosquitto(accounts: &[MqttAccount]) -> Result<MosquittoHandle, ToolError> {
    let (exe, passwd) =
        tokio::task::spawn_blocking(ensure)
            .await
            .map_err(|e| ToolError::Start {
                tool: "mosquitto",
                detail: format!("provisioning task: {e}"),
            })??;
    let dir = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
    let path = |name: &str| dir.path().join(name);
    let (ca_pem, cert_pem, key_pem) =
        super::test_ca::certificates("mosquitto", &["localhost", "127.0.0.1"])?;
    for (name, text) in [
        ("ca.pem", &ca_pem),
        ("server.pem", &cert_pem),
        ("server.key", &key_pem),
    ] {
        std::fs::write(path(name), text).map_err(io(&path(name)))?;
    }
    let passwords = path("passwords");
    std::fs::write(&passwords, "").map_err(io(&passwords))?;
    let mut acl = String::new();
    for account in accounts {
        // `-b`: the password on the command line (a test's throwaway accounts only).
        super::run_checked(
            Command::new(&passwd)
                .arg("-b")
                .arg(&passwords)
                .arg(&account.user)
                .arg(&account.password),
        )?;
        acl.push_str(&format!("user {}\n", account.user));
        for topic in &account.topics {
            acl.push_str(&format!("topic {topic}\n"));
        }
        acl.push('\n');
    }
    std::fs::write(path("acl"), acl).map_err(io(&path("acl")))?;
    std::fs::create_dir_all(path("data")).map_err(io(&path("data")))?;
    let port = free_port()?;
    // Only this user may read the key, the passwords and the ACL (mosquitto warns otherwise).
    for name in ["server.key", "passwords", "acl"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path(name), std::fs::Permissions::from_mode(0o600))
            .map_err(io(&path(name)))?;
    }
    let config = format!(
        // `user`: started as root, mosquitto would switch to its own user, which cannot read
        // this directory; a non-root user keeps itself either way.
        "user {user}\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         password_file {passwords}\n\
         acl_file {acl}\n\
         persistence true\n\
         persistence_location {data}/\n\
         autosave_interval 1\n\
         log_dest file {log}\n\
         listener {port} 127.0.0.1\n\
         protocol mqtt\n\
         cafile {ca}\n\
         certfile {cert}\n\
         keyfile {key}\n\
         tls_version tlsv1.2\n",
        user = std::env::var("USER").unwrap_or_else(|_| "root".into()),
        passwords = passwords.display(),
        acl = path("acl").display(),
        data = path("data").display(),
        log = path("mosquitto.log").display(),
        ca = path("ca.pem").display(),
        cert = path("server.pem").display(),
        key = path("server.key").display(),
    );
    std::fs::write(path("mosquitto.conf"), config).map_err(io(&path("mosquitto.conf")))?;
    let args = vec!["-c".into(), path("mosquitto.conf").into_os_string()];
    let server = super::served::Server::new("mosquitto", exe, args, port, dir, "mosquitto.log");
    let mut handle = MosquittoHandle { server, ca_pem };
    handle.server.launch().await?;
    Ok(handle)
}

impl MosquittoHandle {
    /// The broker's port on 127.0.0.1 (TLS).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The throwaway CA's certificate (PEM), which clients trust for this broker.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA's certificate as a file (for command-line clients' `--cafile`).
    pub fn ca_file(&self) -> PathBuf {
        self.server.path("ca.pem")
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Stops the broker (SIGTERM: it saves its state) and starts it again on the same port.
    pub async fn restart(&mut self) -> Result<(), ToolError> {
        self.server.stop();
        self.server.launch().await
    }
}
