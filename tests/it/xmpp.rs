//! The XMPP server as deployed for devices and owners, and our client on it: prosody on
//! loopback with direct TLS only and SASL accounts made for the test. Two accounts log in and
//! exchange a message; a wrong password, an unknown account, another CA and plain TCP get no
//! session; no anonymous or unencrypted login is offered.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use m2m::node::tools::{ProsodyHandle, XmppAccount, start_prosody};
use m2m::node::xmpp::{XmppEndpoint, XmppError, XmppSession, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::{Event, Stanza};

pub(super) const DOMAIN: &str = "m2m.test";

pub(super) fn account(user: &str) -> XmppAccount {
    XmppAccount {
        user: user.into(),
        password: format!("{user}-secret-password"),
    }
}

fn endpoint(server: &ProsodyHandle, user: &str, password: &str) -> XmppEndpoint {
    XmppEndpoint {
        address: SocketAddr::from(([127, 0, 0, 1], server.port())),
        jid: Jid::new(&format!("{user}@{DOMAIN}")).unwrap(),
        password: password.into(),
        ca_pem: server.ca_pem().to_owned(),
    }
}

pub(super) async fn login(server: &ProsodyHandle, user: &str) -> XmppSession {
    connect(&endpoint(server, user, &format!("{user}-secret-password")))
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e:?}\n{}", server.log()))
}

/// [`login`] asking for `resource` (`user@domain/resource`).
pub(super) async fn login_as(server: &ProsodyHandle, user: &str, resource: &str) -> XmppSession {
    let mut endpoint = endpoint(server, user, &format!("{user}-secret-password"));
    endpoint.jid = Jid::new(&format!("{user}@{DOMAIN}/{resource}")).unwrap();
    connect(&endpoint)
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e:?}\n{}", server.log()))
}

fn body(message: &Message) -> String {
    message
        .get_best_body_cloned(vec![])
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The next message `session` receives, within 10 s.
async fn next_message(session: &mut XmppSession) -> Message {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match session.client.next().await {
                Some(Event::Stanza(Stanza::Message(message))) => return message,
                Some(_) => {}
                None => panic!("the stream ended"),
            }
        }
    })
    .await
    .expect("a message in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_its_accounts_in_over_tls_and_refuses_everyone_else() {
    let server = start_prosody(DOMAIN, &[account("device"), account("owner")])
        .await
        .expect("prosody");
    let mut device = login(&server, "device").await;
    let mut owner = login(&server, "owner").await;
    assert_eq!(
        device.bound.to_bare().to_string(),
        format!("device@{DOMAIN}")
    );

    // A message from the owner reaches the device (and back).
    let hello =
        Message::chat(Some(device.bound.clone())).with_body(Lang::default(), "who are you?".into());
    owner.client.send_stanza(hello.into()).await.unwrap();
    let got = next_message(&mut device).await;
    assert_eq!(got.type_, MessageType::Chat);
    assert_eq!(body(&got), "who are you?");
    assert_eq!(got.from.unwrap().to_bare(), owner.bound.to_bare());
    let reply =
        Message::chat(Some(owner.bound.clone())).with_body(Lang::default(), "a sensor".into());
    device.client.send_stanza(reply.into()).await.unwrap();
    assert_eq!(body(&next_message(&mut owner).await), "a sensor");

    // Wrong password, unknown account: refused by SASL.
    for (user, password) in [("device", "not-the-password"), ("nobody", "whatever-it-is")] {
        let refused = connect(&endpoint(&server, user, password)).await;
        assert!(
            matches!(refused, Err(XmppError::Login(tokio_xmpp::Error::Auth(_)))),
            "{user}: {refused:?}"
        );
    }
    // A client trusting another CA does not get as far as a login.
    let other = start_prosody(DOMAIN, &[]).await.expect("a second prosody");
    let mut wrong_ca = endpoint(&server, "device", "device-secret-password");
    wrong_ca.ca_pem = other.ca_pem().to_owned();
    let refused = connect(&wrong_ca).await;
    assert!(matches!(refused, Err(XmppError::Login(_))), "{refused:?}");
    // Plain XMPP on the port gets no stream: it speaks TLS only.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    plain.write_all(header.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut answer)).await;
    let text = match read {
        Ok(Ok(n)) => String::from_utf8_lossy(&answer[..n]).into_owned(),
        _ => String::new(),
    };
    assert!(!text.contains("stream:features"), "a plain stream: {text}");

    // What the server offers: password mechanisms only (no ANONYMOUS); no in-band
    // registration.
    assert!(
        device
            .mechanisms
            .iter()
            .any(|m| m.starts_with("SCRAM-SHA-")),
        "{:?}",
        device.mechanisms
    );
    assert!(
        !device.mechanisms.contains("ANONYMOUS"),
        "{:?}",
        device.mechanisms
    );
    assert!(!server.log().contains("mod_register"), "{}", server.log());
    println!("xmpp: {} and {} logged in", device.bound, owner.bound);
}
