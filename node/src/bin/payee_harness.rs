//! `m2m-payee-harness`: a payee on one channel that reads vouchers from stdin and acknowledges
//! each on stdout only after it is durable in the channel store.
//!
//! It exists for the crash test (`node/tests/crash.rs`), which kills it with SIGKILL at random
//! points and checks that nothing acknowledged is lost and nothing is counted twice. It uses the
//! real data directory lock, store, group commit and channel checks.
//!
//! Usage: `m2m-payee-harness DATA_DIR CHANNEL_ID DOMAIN_SEPARATOR PAYER_AUTHORIZER DEPOSIT PRICE`
//! (hex for the 32/32/20-byte values). On start it prints `state CHARGED MAX SIGNATURE` (the
//! newest voucher it holds, `0 -` if none); then for every input line (a hex compact voucher
//! frame) it prints `ack MAX` once durable, or `err MESSAGE`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

use m2m_core::codec::Frame;
use m2m_core::payee::PayeeChannel;
use m2m_core::{Asset, ChannelId, ChannelTerms, EvmAddress};
use m2m_node::channel_crypto::Secp256k1Verifier;
use m2m_node::datadir::DataDir;
use m2m_node::store::{ChannelStore, RecordWrite, Ticket};

fn parse_hex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let bytes = alloy::primitives::hex::decode(text).map_err(|e| format!("{text}: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{text}: expected {N} bytes"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("m2m-payee-harness: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data_dir, channel_id, domain, authorizer, deposit, price] = args.as_slice() else {
        return Err(
            "usage: DATA_DIR CHANNEL_ID DOMAIN_SEPARATOR PAYER_AUTHORIZER DEPOSIT PRICE".into(),
        );
    };
    let asset = Asset::Erc20 {
        chain_id: 31337,
        token: [0; 20],
    };
    let terms = ChannelTerms {
        channel_id: ChannelId(parse_hex(channel_id)?),
        asset,
        domain_separator: parse_hex(domain)?,
        payer_authorizer: EvmAddress(parse_hex(authorizer)?),
    };
    let deposit: u128 = deposit.parse().map_err(|e| format!("deposit: {e}"))?;
    let price = terms.amount(price.parse().map_err(|e| format!("price: {e}"))?);

    let data_dir = DataDir::open(&PathBuf::from(data_dir)).map_err(|e| e.to_string())?;
    let store = ChannelStore::open(&data_dir).map_err(|e| e.to_string())?;
    let mut channel = match store
        .load_payee(&terms.channel_id)
        .map_err(|e| e.to_string())?
    {
        Some(record) => PayeeChannel::restore(terms, record).map_err(|e| e.to_string())?,
        None => {
            let channel =
                PayeeChannel::open(terms, terms.amount(deposit), 0).map_err(|e| e.to_string())?;
            store
                .persist(RecordWrite::Payee(terms.channel_id, *channel.record()))
                .map_err(|e| e.to_string())?;
            channel
        }
    };
    let record = channel.record();
    let (max, signature) = match record.latest {
        Some(v) => (
            v.max_claimable_units,
            alloy::primitives::hex::encode(v.signature.0),
        ),
        None => (0, "-".into()),
    };
    println!("state {} {max} {signature}", record.charged_units);

    // Acknowledgements go out in order from their own thread, each only after its ticket resolved,
    // so later vouchers can be checked while earlier ones are being fsynced (group commit).
    // Refusals travel the same queue so output stays in input order.
    let (acks, pending) = mpsc::channel::<Result<(Ticket, u128), String>>();
    let acker = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        for outcome in pending {
            let line = match outcome.map(|(ticket, max)| (ticket.wait(), max)) {
                Ok((Ok(()), max)) => format!("ack {max}"),
                Ok((Err(e), _)) => format!("err {e}"),
                Err(refusal) => format!("err {refusal}"),
            };
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return;
            }
        }
    });
    let verifier = Secp256k1Verifier::default();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let bytes = alloy::primitives::hex::decode(line.trim()).map_err(|e| e.to_string())?;
        let voucher = match Frame::decode(&bytes) {
            Ok(Frame::Voucher(frame)) => frame.into_voucher(terms.channel_id),
            other => return Err(format!("not a voucher frame: {other:?}")),
        };
        match channel.accept(&voucher, price, price, &verifier) {
            Ok(accepted) => {
                let ticket = store.submit(RecordWrite::Payee(terms.channel_id, accepted.record));
                channel.commit(accepted);
                let _ = acks.send(Ok((ticket, voucher.max_claimable_units)));
            }
            Err(e) => {
                let _ = acks.send(Err(e.to_string()));
            }
        }
    }
    drop(acks);
    let _ = acker.join();
    Ok(())
}
