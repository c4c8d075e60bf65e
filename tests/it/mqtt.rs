//! The MQTT broker as deployed, against the device's client: mosquitto (Debian, installed when
//! missing) on loopback with TLS from a throwaway CA, password accounts and per-account topic
//! ACLs. A seller's retained price sheet reaches an allowed subscriber over TLS and survives a
//! broker restart; an anonymous client, a wrong password, a client that does not trust the
//! broker's CA and plain TCP are refused; a subscriber outside the ACL gets no message, and a publisher outside it cannot overwrite the sheet.

use std::time::Duration;

use m2m::node::mqtt::{MqttEndpoint, MqttError, connect};
use m2m::node::tools::{MosquittoHandle, MqttAccount, start_mosquitto};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Packet, PubAck, PubAckReason, SubscribeReasonCode,
};
use rumqttc::v5::{Event, EventLoop};

const TOPIC: &str = "building1/floor1/room1/temperature";
const PRICE_SHEET: &str = "building1/floor1/room1/temperature/price";

fn account(user: &str, topics: &[&str]) -> MqttAccount {
    MqttAccount {
        user: user.into(),
        password: format!("{user}-secret-password"),
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn endpoint(broker: &MosquittoHandle, user: &str, password: &str) -> MqttEndpoint {
    MqttEndpoint {
        host: "127.0.0.1".into(),
        port: broker.port(),
        ca_pem: broker.ca_pem().to_owned(),
        user: user.into(),
        password: password.into(),
    }
}

/// The next packet the broker sends, within `within`.
async fn next_incoming(events: &mut EventLoop, within: Duration) -> Option<Packet> {
    tokio::time::timeout(within, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) => return Some(packet),
                Ok(Event::Outgoing(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// `user` publishes `sheet` as the retained price sheet (QoS 1); the broker's PUBACK.
async fn publish_sheet(broker: &MosquittoHandle, user: &str, sheet: &[u8]) -> PubAck {
    let password = format!("{user}-secret-password");
    let (client, mut events) = connect(&endpoint(broker, user, &password), user, true)
        .await
        .unwrap();
    client
        .publish(PRICE_SHEET, QoS::AtLeastOnce, true, sheet.to_vec())
        .await
        .unwrap();
    loop {
        match next_incoming(&mut events, Duration::from_secs(10)).await {
            Some(Packet::PubAck(ack)) => {
                let _ = client.disconnect().await;
                return ack;
            }
            Some(_) => {}
            None => panic!("no PUBACK; broker log:\n{}", broker.log()),
        }
    }
}

/// Subscribes and returns the SUBACK's reason code and the first message (if any arrives).
async fn subscribe(
    broker: &MosquittoHandle,
    user: &str,
    filter: &str,
) -> (SubscribeReasonCode, Option<(String, Vec<u8>)>) {
    let password = format!("{user}-secret-password");
    let (client, mut events) = connect(&endpoint(broker, user, &password), user, true)
        .await
        .unwrap();
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let mut code = None;
    while code.is_none() {
        if let Some(Packet::SubAck(ack)) = next_incoming(&mut events, Duration::from_secs(10)).await
        {
            code = ack.return_codes.first().copied();
        }
    }
    let mut message = None;
    while let Some(packet) = next_incoming(&mut events, Duration::from_secs(2)).await {
        if let Packet::Publish(publish) = packet {
            message = Some((
                String::from_utf8_lossy(&publish.topic).into_owned(),
                publish.payload.to_vec(),
            ));
            break;
        }
    }
    (code.unwrap(), message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_serves_its_accounts_over_tls_and_refuses_everyone_else() {
    let seller = account("seller", &["readwrite building1/#"]);
    let buyer = account(
        "buyer",
        &["read building1/+/+/+", "read building1/+/+/+/price"],
    );
    let outsider = account("outsider", &["read other/#"]);
    let mut broker = start_mosquitto(&[seller.clone(), buyer, outsider])
        .await
        .expect("mosquitto");

    // The seller publishes its price sheet, retained, at least once.
    let ack = publish_sheet(&broker, &seller.user, b"{\"price\":\"1000\"}").await;
    // Accepted (0x10 is a success: nobody is subscribed yet; the broker keeps it retained).
    assert!(
        matches!(
            ack.reason,
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
        ),
        "{ack:?}"
    );

    // An allowed subscriber gets it, and again after the broker restarted (persistence).
    for round in ["before", "after"] {
        let (code, message) = subscribe(&broker, "buyer", PRICE_SHEET).await;
        assert_eq!(
            code,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            "{round}"
        );
        let (topic, payload) = message.unwrap_or_else(|| panic!("{round}: no retained sheet"));
        assert_eq!(topic, PRICE_SHEET);
        assert_eq!(payload, b"{\"price\":\"1000\"}");
        if round == "before" {
            broker.restart().await.unwrap();
        }
    }

    // Outside the ACL nothing is delivered, not even the retained sheet. (mosquitto 2.0 grants
    // a subscription whose filter no ACL line allows, then checks every message against the
    // ACL as it delivers; a broker may refuse it outright, 0x87.)
    let (code, message) = subscribe(&broker, "outsider", "building1/#").await;
    assert!(
        matches!(
            code,
            SubscribeReasonCode::NotAuthorized | SubscribeReasonCode::Success(_)
        ),
        "{code:?}"
    );
    assert!(message.is_none(), "{message:?}\n{}", broker.log());
    // The buyer may not write the seller's price sheet: the broker answers "not authorized"
    // and the retained sheet is unchanged.
    let ack = publish_sheet(&broker, "buyer", b"{\"price\":\"1\"}").await;
    assert_eq!(ack.reason, PubAckReason::NotAuthorized, "{ack:?}");
    let (_, message) = subscribe(&broker, "buyer", PRICE_SHEET).await;
    assert_eq!(message.unwrap().1, b"{\"price\":\"1000\"}");
    let (code, message) = subscribe(&broker, "buyer", TOPIC).await;
    assert_eq!(code, SubscribeReasonCode::Success(QoS::AtLeastOnce));
    assert!(message.is_none(), "no reading was published: {message:?}");

    // Wrong password, unknown account, no credentials: refused at CONNECT.
    for (user, password) in [("buyer", "wrong"), ("nobody", "x"), ("", "")] {
        match connect(&endpoint(&broker, user, password), "intruder", true).await {
            Err(MqttError::Refused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
            )) => {}
            Err(other) => panic!("{user:?}: refused, but as {other:?}"),
            Ok(_) => panic!("{user:?} with {password:?} was let in"),
        }
    }
    // A client that trusts another CA does not complete the handshake.
    let mut stranger = endpoint(&broker, &seller.user, &seller.password);
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    stranger.ca_pem = other.cert.pem();
    assert!(matches!(
        connect(&stranger, "mitm", true).await,
        Err(MqttError::Connection(_))
    ));
    // Plain MQTT on the TLS port gets no CONNACK.
    let mut plain = rumqttc::v5::MqttOptions::new("plain", "127.0.0.1", broker.port());
    plain.set_credentials(seller.user.clone(), seller.password.clone());
    let (_client, mut events) = rumqttc::v5::AsyncClient::new(plain, 8);
    let answer = tokio::time::timeout(Duration::from_secs(5), events.poll()).await;
    assert!(
        !matches!(answer, Ok(Ok(Event::Incoming(Packet::ConnAck(_))))),
        "{answer:?}"
    );
}
