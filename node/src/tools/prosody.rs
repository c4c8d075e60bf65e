//! A prosody XMPP server on a free loopback port, as deployed for devices and owners: client
//! connections over direct TLS only (XEP-0368; a throwaway CA and a certificate for the XMPP
//! domain made for this server), no plain-text client port, no server-to-server, SASL accounts
//! created here (no in-band registration, no anonymous login).
//!
//! prosody comes from Debian (package `prosody`, which also ships `prosodyctl`), installed when
//! missing; a packaged service that the installation may have started is stopped, so nothing
//! listens beyond what a test starts. The server is registered with the reaper, so it dies with
//! this process however that ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ToolError, free_port};

const PURPOSE: &str = "the XMPP server (prosody)";

/// One SASL account of the server.
#[derive(Debug, Clone)]
pub struct XmppAccount {
    /// The local part of its JID (`<user>@<domain>`).
    pub user: String,
    /// Password.
    pub password: String,
}

/// A running server. Dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct ProsodyHandle {
    server: super::served::Server,
    domain: String,
    ca_pem: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ToolError + '_ {
    move |source| ToolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `prosody` and `prosodyctl`, installed from Debian when missing.
fn ensure() -> Result<(PathBuf, PathBuf), ToolError> {
    let find = |program| super::on_path(program, &["/usr/bin", "/usr/sbin"]);
    let found = || Some((find("prosody")?, find("prosodyctl")?));
    if let Some(pair) = found() {
        return Ok(pair);
    }
    super::ensure_packages(PURPOSE, &["prosody"])?;
    // Debian's package may start its own service (on 5222/5269, every interface): not ours.
    let _ = Command::new("service")
        .args(["prosody", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    found().ok_or(ToolError::MissingPackages {
        purpose: PURPOSE,
        packages: "prosody".into(),
    })
}

/// A Lua string literal of `text` (paths and names in the configuration).
fn lua(text: &str) -> String {
    format!("{text:?}")
}

/// Starts a server for `domain` with `accounts` on a free loopback port and waits until it
/// accepts connections.
pub async fn start_prosody(
    domain: &str,
    accounts: &[XmppAccount],
) -> Result<ProsodyHandle, ToolError> {
    let (exe, ctl) =
        tokio::task::spawn_blocking(ensure)
            .await
            .map_err(|e| ToolError::Start {
                tool: "prosody",
                detail: format!("provisioning task: {e}"),
            })??;
    let dir = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
    let path = |name: &str| dir.path().join(name);
    let (ca_pem, cert_pem, key_pem) = super::test_ca::certificates("prosody", &[domain])?;
    for (name, text) in [
        ("ca.pem", &ca_pem),
        ("server.pem", &cert_pem),
        ("server.key", &key_pem),
    ] {
        std::fs::write(path(name), text).map_err(io(&path(name)))?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let key = path("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(io(&key))?;
    }
    for name in ["data", "certs"] {
        std::fs::create_dir_all(path(name)).map_err(io(&path(name)))?;
    }
    let port = free_port()?;
    let config = format!(
        r#"-- written by m2m for one test server
run_as_root = true
daemonize = false
pidfile = {pid}
data_path = {data}
certificates = {certs}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = {log} }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ }}
c2s_direct_tls_ports = {{ {port} }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "presence" }}
modules_disabled = {{ "s2s" }}
authentication = "internal_hashed"
allow_registration = false
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
ssl = {{ certificate = {cert}, key = {key} }}
VirtualHost {domain}
"#,
        pid = lua(&path("prosody.pid").display().to_string()),
        data = lua(&path("data").display().to_string()),
        certs = lua(&path("certs").display().to_string()),
        log = lua(&path("prosody.log").display().to_string()),
        cert = lua(&path("server.pem").display().to_string()),
        key = lua(&path("server.key").display().to_string()),
        domain = lua(domain),
    );
    let config_file = path("prosody.cfg.lua");
    std::fs::write(&config_file, config).map_err(io(&config_file))?;
    for account in accounts {
        // The password on the command line: a test's throwaway accounts only.
        super::run_checked(Command::new(&ctl).arg("--config").arg(&config_file).args([
            "register",
            &account.user,
            domain,
            &account.password,
        ]))?;
    }
    let args = vec!["--config".into(), config_file.into_os_string(), "-F".into()];
    let server = super::served::Server::new("prosody", exe, args, port, dir, "prosody.log");
    let mut handle = ProsodyHandle {
        server,
        domain: domain.to_owned(),
        ca_pem,
    };
    handle.server.launch().await?;
    Ok(handle)
}

impl ProsodyHandle {
    /// The client port on 127.0.0.1 (direct TLS).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The XMPP domain the server hosts.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The throwaway CA's certificate (PEM), which clients trust for this server.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Stops the server and starts it again on the same port and data.
    pub async fn restart(&mut self) -> Result<(), ToolError> {
        self.server.stop();
        self.server.launch().await
    }
}
