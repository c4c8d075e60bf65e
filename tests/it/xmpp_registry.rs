//! Claiming a device through a thing registry (XEP-0347) on prosody: the device registers its
//! meta tags with a random KEY and shows them as an `IoTDisco` string (its QR code); an
//! eavesdropper without the KEY guesses, is refused, and is locked out — the right string then
//! fails for it too, also after the registry restarts from its state file; the owner claims
//! with the string and the device learns its owner; a second claim finds nothing, a new
//! registration of the device says who owns it, and only the owner removes it.

use base64::Engine;
use m2m::core::discovery::{self, MetaTag, TagValue};
use m2m::node::tools::start_prosody;
use m2m::node::xmpp::discovery::{
    RegistryFile, RegistryService, claim, register, remove, wait_claimed,
};
use tokio_xmpp::jid::Jid;

use super::xmpp::{DOMAIN, account, login, login_as};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_claims_a_device_with_its_qr_string_and_a_guesser_is_locked_out() {
    let server = start_prosody(
        DOMAIN,
        &[
            account("registry"),
            account("device"),
            account("owner"),
            account("eve"),
        ],
    )
    .await
    .expect("prosody");
    let registry_jid = Jid::new(&format!("registry@{DOMAIN}/registry")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let file = RegistryFile::new(state.path().join("registry.state"));
    let start_registry = || async {
        let session = login_as(&server, "registry", "registry").await;
        let service = RegistryService::open(session, file.clone()).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run_until(async move {
            let _ = stopped.await;
        }));
        (stop, task)
    };
    let mut serving = start_registry().await;

    // The device's tags and a KEY of 128 random bits.
    let mut secret = [0u8; 16];
    getrandom::getrandom(&mut secret).unwrap();
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let tags = vec![
        MetaTag::str("MAN", "m2m.example").unwrap(),
        MetaTag::str("MODEL", "room-sensor").unwrap(),
        MetaTag::str("SN", "RS-0017").unwrap(),
        MetaTag::new("V", TagValue::Num("1.0".into())).unwrap(),
        MetaTag::str("KEY", &key).unwrap(),
    ];
    let mut device = login(&server, "device").await;
    let owner_now = register(&mut device, &registry_jid, &tags)
        .await
        .expect("registered");
    assert_eq!(owner_now, None, "unclaimed");
    let qr = discovery::encode_claim(&tags);
    assert!(qr.starts_with("IoTDisco;MAN:m2m.example;MODEL:room-sensor;SN:RS-0017;#V:1.0;KEY:"));

    // Eve knows the public tags, not the KEY: refused, then locked out, even with the QR.
    let mut eve = login(&server, "eve").await;
    let mut guess = tags.clone();
    guess[4] = MetaTag::str("KEY", "AAAAAAAAAAAAAAAAAAAAAA").unwrap();
    for _ in 0..discovery::LOCKOUT_AFTER {
        let refused = claim(&mut eve, &registry_jid, &guess).await.unwrap_err();
        assert!(refused.is_not_found(), "{refused:?}");
    }
    let scanned = discovery::decode_claim(&qr).unwrap();
    let locked = claim(&mut eve, &registry_jid, &scanned).await.unwrap_err();
    assert!(locked.is_locked_out(), "{locked:?}");
    // The registry restarts: the registration and the lock-out were on disk.
    let (stop, task) = serving;
    let _ = stop.send(());
    task.await.unwrap();
    serving = start_registry().await;
    let still = claim(&mut eve, &registry_jid, &scanned).await.unwrap_err();
    assert!(still.is_locked_out(), "{still:?}");

    // The owner scans the QR and claims; the device is told.
    let mut owner = login(&server, "owner").await;
    let waiting = tokio::spawn({
        let registry_jid = registry_jid.clone();
        async move {
            let owner = wait_claimed(&mut device, &registry_jid).await;
            (owner, device)
        }
    });
    let thing = claim(
        &mut owner,
        &registry_jid,
        &discovery::decode_claim(&qr).unwrap(),
    )
    .await
    .expect("claimed");
    assert_eq!(thing.to_string(), format!("device@{DOMAIN}"));
    let (told, mut device) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the device is told in time")
        .unwrap();
    assert_eq!(told.unwrap().to_string(), format!("owner@{DOMAIN}"));

    // Claimed once: the QR claims nothing more; the device's next registration names its owner.
    let again = claim(&mut owner, &registry_jid, &tags).await.unwrap_err();
    assert!(again.is_not_found(), "{again:?}");
    let known = register(&mut device, &registry_jid, &tags).await.unwrap();
    assert_eq!(known.unwrap().to_string(), format!("owner@{DOMAIN}"));
    // Only its owner removes it.
    let not_eves = remove(&mut eve, &registry_jid, &thing).await.unwrap_err();
    assert!(not_eves.is_not_found(), "{not_eves:?}");
    remove(&mut owner, &registry_jid, &thing)
        .await
        .expect("the owner removes it");
    let (stop, task) = serving;
    let _ = stop.send(());
    task.await.unwrap();
    println!(
        "registry: {thing} claimed by owner@{DOMAIN}; QR {} chars",
        qr.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_claims_from_the_command_line_with_the_string_the_device_prints() {
    let server = start_prosody(
        DOMAIN,
        &[account("registry"), account("device"), account("owner")],
    )
    .await
    .expect("prosody");
    let state = tempfile::tempdir().unwrap();
    let file = RegistryFile::new(state.path().join("registry.state"));
    let session = login_as(&server, "registry", "registry").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(RegistryService::open(session, file).unwrap().run_until(
        async move {
            let _ = stopped.await;
        },
    ));
    let registry_jid = format!("registry@{DOMAIN}/registry");

    // The device prints its claim string; its KEY comes from its seed, the same every time.
    let device_cli = super::cli::Device::new();
    device_cli.run_ok(&["--json", "init"]);
    let printed = super::cli::stdout_json(&device_cli.run_ok(&["--json", "owner", "qr"]));
    let text = printed["claim"].as_str().unwrap().to_owned();
    let again = super::cli::stdout_json(&device_cli.run_ok(&["--json", "owner", "qr"]));
    assert_eq!(again["claim"], printed["claim"], "derived, not drawn");
    let tags = discovery::decode_claim(&text).unwrap();
    let key = tags.iter().find(|t| t.name == "KEY").unwrap();
    assert_eq!(key.value.text().len(), 22, "128 bits, base64url");
    let mut device = login(&server, "device").await;
    let registry = Jid::new(&registry_jid).unwrap();
    assert_eq!(register(&mut device, &registry, &tags).await.unwrap(), None);

    // The owner's command line: a damaged string and a wrong key are refused, the real one
    // claims.
    let files = tempfile::tempdir().unwrap();
    let (password, ca) = (files.path().join("password"), files.path().join("ca.pem"));
    std::fs::write(&password, "owner-secret-password\n").unwrap();
    std::fs::write(&ca, server.ca_pem()).unwrap();
    let port = format!("127.0.0.1:{}", server.port());
    let owner_cli = super::cli::Device::new();
    let claim_with = |claim: &str| {
        owner_cli.run(&[
            "--json",
            "owner",
            "claim",
            claim,
            "--registry",
            &registry_jid,
            "--server",
            &port,
            "--jid",
            &format!("owner@{DOMAIN}"),
            "--password-file",
            password.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
        ])
    };
    let damaged = claim_with("IoTDisco;SN");
    assert!(!damaged.status.success());
    assert!(
        String::from_utf8_lossy(&damaged.stderr).contains("the claim string"),
        "{}",
        String::from_utf8_lossy(&damaged.stderr)
    );
    let wrong = text.replace(key.value.text(), "BBBBBBBBBBBBBBBBBBBBBB");
    let refused = claim_with(&wrong);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("registry refused"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let waiting = tokio::spawn(async move {
        let owner = wait_claimed(&mut device, &registry).await;
        (owner, device)
    });
    let claimed = claim_with(&text);
    assert!(
        claimed.status.success(),
        "{}",
        String::from_utf8_lossy(&claimed.stderr)
    );
    let thing = super::cli::stdout_json(&claimed)["thing"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(thing, format!("device@{DOMAIN}"));
    let (told, _device) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the device is told in time")
        .unwrap();
    assert_eq!(told.unwrap().to_string(), format!("owner@{DOMAIN}"));
    let _ = stop.send(());
    serving.await.unwrap();
}
