//! The settlement contract on a real anvil, at the x402 canonical addresses: EIP-3009 deposits
//! into ten channels, 10,000 vouchers signed off chain by the device wallet, one batched claim,
//! settle, a signed partial refund, and a timed withdrawal that the receiver pre-empts by
//! claiming inside the delay. Every digest is computed in Rust and checked against the
//! contract's own, and balances conserve to the wei. Gas per step is printed (`--nocapture`).

use alloy::primitives::aliases::U40;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use m2m::contracts::CANONICAL_SETTLEMENT;
use m2m::contracts::bindings::{BatchSettlement, ChannelConfig, IBatchSettlement, TestToken};
use m2m::contracts::eip712::{self, ClaimEntry};
use m2m::wallet::{DeviceKeys, DeviceSeed, Network, SeedLength, Signer};

use crate::support::{LocalChain, send};

const CHAIN_ID: u64 = 31337;
const CHANNELS: usize = 10;
const VOUCHERS_PER_CHANNEL: u128 = 1_000;
const PRICE: u128 = 250; // 0.00025 TUSD per reading
const DEPOSIT: u128 = 1_000_000; // 1 TUSD per channel
const WITHDRAW_DELAY: u64 = 15 * 60;

fn device_keys() -> DeviceKeys {
    DeviceKeys::derive(
        &DeviceSeed::generate(SeedLength::Words12).unwrap(),
        Network::Regtest,
    )
    .unwrap()
}

fn sign(keys: &DeviceKeys, digest: B256) -> Bytes {
    Bytes::copy_from_slice(&keys.sign_evm_digest(&digest).unwrap().as_bytes())
}

#[tokio::test]
async fn channel_lifecycle_on_anvil_conserves_every_wei() {
    let chain = LocalChain::start(CHAIN_ID).await;
    let payer = chain.account(1);
    let receiver = chain.account(2).address();
    let facilitator = &chain.facilitator;
    let payer_chain = chain.provider(1);
    let (deployment, token_address) = (chain.deployment, chain.token);

    // The device wallet signs vouchers (payer authorizer) and claims/refunds (receiver authorizer).
    let payer_authorizer = device_keys();
    let receiver_authorizer = device_keys();

    assert_eq!(deployment.settlement, CANONICAL_SETTLEMENT);
    let token = TestToken::new(token_address, facilitator);
    let settlement = BatchSettlement::new(deployment.settlement, facilitator);
    let minted = U256::from(DEPOSIT * CHANNELS as u128);
    send(token.mint(payer.address(), minted), "mint").await;

    let domain = eip712::settlement_domain(CHAIN_ID, deployment.settlement);
    let token_domain = eip712::token_domain(
        token.name().call().await.unwrap(),
        token.version().call().await.unwrap(),
        CHAIN_ID,
        token_address,
    );
    let configs: Vec<ChannelConfig> = (0..CHANNELS)
        .map(|i| ChannelConfig {
            payer: payer.address(),
            payerAuthorizer: payer_authorizer.evm_address(),
            receiver,
            receiverAuthorizer: receiver_authorizer.evm_address(),
            token: token_address,
            withdrawDelay: U40::from(WITHDRAW_DELAY),
            salt: B256::with_last_byte(i as u8),
        })
        .collect();
    let ids: Vec<B256> = configs
        .iter()
        .map(|config| eip712::channel_id(&domain, config))
        .collect();
    for (config, id) in configs.iter().zip(&ids) {
        assert_eq!(
            settlement
                .getChannelId(config.clone())
                .call()
                .await
                .unwrap(),
            *id,
            "channel id"
        );
    }

    // Deposits. Channels 0-4: the payer signs EIP-3009 authorizations and the facilitator relays
    // them (gasless for the payer, as x402 clients do). Channels 5-9: the payer deposits itself
    // with `transferFrom` after a one-time approval (the plain, ETH-like path).
    let as_payer = BatchSettlement::new(deployment.settlement, &payer_chain);
    let as_payer_token = TestToken::new(token_address, &payer_chain);
    send(
        as_payer_token.approve(deployment.settlement, U256::MAX),
        "approve",
    )
    .await;
    let (mut eip3009_gas, mut direct_gas) = (0, 0);
    for (index, (config, id)) in configs.iter().zip(&ids).enumerate() {
        if index >= CHANNELS / 2 {
            let call = as_payer.deposit(config.clone(), DEPOSIT, Address::ZERO, Bytes::new());
            direct_gas += send(call, "deposit (direct)").await;
            continue;
        }
        let salt = U256::from(index + 100);
        let valid_before = U256::from(u64::MAX);
        let authorization = eip712::ReceiveWithAuthorization {
            from: payer.address(),
            to: deployment.erc3009_collector,
            value: U256::from(DEPOSIT),
            validAfter: U256::ZERO,
            validBefore: valid_before,
            nonce: eip712::deposit_nonce(*id, salt),
        };
        let digest =
            alloy::sol_types::SolStruct::eip712_signing_hash(&authorization, &token_domain);
        let signature = payer.sign_hash_sync(&digest).unwrap().as_bytes();
        let data = eip712::erc3009_collector_data(U256::ZERO, valid_before, salt, &signature);
        let call = settlement.deposit(config.clone(), DEPOSIT, deployment.erc3009_collector, data);
        eip3009_gas += send(call, "deposit (EIP-3009)").await;
    }

    // 10,000 vouchers, signed off chain by the device wallet; the receiver keeps the newest.
    let mut newest: Vec<(u128, Bytes)> = vec![(0, Bytes::new()); CHANNELS];
    let mut held_back: Option<(u128, Bytes)> = None;
    for step in 1..=VOUCHERS_PER_CHANNEL {
        for (channel, id) in ids.iter().enumerate() {
            let cumulative = step * PRICE;
            let signature = sign(
                &payer_authorizer,
                eip712::voucher_digest(&domain, *id, cumulative),
            );
            newest[channel] = (cumulative, signature);
        }
        if step == VOUCHERS_PER_CHANNEL - 100 {
            held_back = Some(newest[1].clone()); // channel 1 is claimed at an older voucher first
        }
    }
    let sample = settlement
        .getVoucherDigest(ids[3], 42)
        .call()
        .await
        .unwrap();
    assert_eq!(
        sample,
        eip712::voucher_digest(&domain, ids[3], 42),
        "voucher digest"
    );

    // One signed claim over all channels, relayed by the facilitator.
    let mut rows = Vec::new();
    for (channel, config) in configs.iter().enumerate() {
        let (ceiling, signature) = if channel == 1 {
            held_back.clone().unwrap()
        } else {
            newest[channel].clone()
        };
        rows.push(IBatchSettlement::VoucherClaim {
            voucher: IBatchSettlement::Voucher {
                channel: config.clone(),
                maxClaimableAmount: ceiling,
            },
            signature,
            totalClaimed: ceiling,
        });
    }
    let entries: Vec<ClaimEntry> = rows
        .iter()
        .zip(&ids)
        .map(|(row, id)| ClaimEntry {
            channelId: *id,
            maxClaimableAmount: row.voucher.maxClaimableAmount,
            totalClaimed: row.totalClaimed,
        })
        .collect();
    let batch_digest = eip712::claim_batch_digest(&domain, entries);
    assert_eq!(
        settlement
            .getClaimBatchDigest(rows.clone())
            .call()
            .await
            .unwrap(),
        batch_digest,
        "batch digest"
    );
    let claim = settlement.claimWithSignature(rows, sign(&receiver_authorizer, batch_digest));
    let claim_gas = send(claim, "claimWithSignature x10").await;

    let settle = settlement.settle(receiver, token_address);
    let settle_gas = send(settle, "settle").await;
    let full = VOUCHERS_PER_CHANNEL * PRICE;
    let first_claims = full * (CHANNELS as u128 - 1) + (VOUCHERS_PER_CHANNEL - 100) * PRICE;
    assert_eq!(
        token.balanceOf(receiver).call().await.unwrap(),
        U256::from(first_claims)
    );

    // Signed partial refund of channel 0's unclaimed escrow.
    let refund_amount = (DEPOSIT - full) / 2;
    let refund_digest = eip712::refund_digest(&domain, ids[0], U256::ZERO, refund_amount);
    let onchain_refund_digest = settlement
        .getRefundDigest(ids[0], U256::ZERO, refund_amount)
        .call()
        .await
        .unwrap();
    assert_eq!(onchain_refund_digest, refund_digest, "refund digest");
    let refund = settlement.refundWithSignature(
        configs[0].clone(),
        refund_amount,
        U256::ZERO,
        sign(&receiver_authorizer, refund_digest),
    );
    let refund_gas = send(refund, "refundWithSignature").await;
    assert_eq!(
        settlement.refundNonce(ids[0]).call().await.unwrap(),
        U256::from(1)
    );

    // Timed withdrawal of all of channel 1; the receiver claims its newest voucher inside the delay.
    let unclaimed_1 = DEPOSIT - (VOUCHERS_PER_CHANNEL - 100) * PRICE;
    let initiate = as_payer.initiateWithdraw(configs[1].clone(), unclaimed_1);
    send(initiate, "initiateWithdraw").await;
    let early = as_payer.finalizeWithdraw(configs[1].clone());
    assert!(
        early.call().await.is_err(),
        "finalizing before the delay must fail"
    );

    let (ceiling, signature) = newest[1].clone();
    let row = IBatchSettlement::VoucherClaim {
        voucher: IBatchSettlement::Voucher {
            channel: configs[1].clone(),
            maxClaimableAmount: ceiling,
        },
        signature,
        totalClaimed: ceiling,
    };
    let single = vec![ClaimEntry {
        channelId: ids[1],
        maxClaimableAmount: ceiling,
        totalClaimed: ceiling,
    }];
    let single_sig = sign(
        &receiver_authorizer,
        eip712::claim_batch_digest(&domain, single),
    );
    let claim_in_delay = settlement.claimWithSignature(vec![row], single_sig);
    send(claim_in_delay, "claim inside the delay").await;

    let _: serde_json::Value = facilitator
        .raw_request("evm_increaseTime".into(), (WITHDRAW_DELAY,))
        .await
        .unwrap();
    let _: serde_json::Value = facilitator
        .raw_request("evm_mine".into(), ())
        .await
        .unwrap();
    let finalize = as_payer.finalizeWithdraw(configs[1].clone());
    send(finalize, "finalizeWithdraw").await;
    send(settlement.settle(receiver, token_address), "settle").await;

    // Conservation to the wei: receiver got every claimed voucher, the payer the rest.
    let claimed_total = full * CHANNELS as u128;
    let withdrawn = DEPOSIT - full; // channel 1's unclaimed escrow after the late claim
    let receiver_balance = token.balanceOf(receiver).call().await.unwrap();
    let payer_balance = token.balanceOf(payer.address()).call().await.unwrap();
    let escrow = token.balanceOf(deployment.settlement).call().await.unwrap();
    assert_eq!(
        receiver_balance,
        U256::from(claimed_total),
        "receiver paid exactly the claims"
    );
    assert_eq!(
        payer_balance,
        U256::from(refund_amount + withdrawn),
        "payer got refund and withdrawal"
    );
    assert_eq!(
        receiver_balance + payer_balance + escrow,
        minted,
        "no wei created or lost"
    );
    let channel_0 = settlement.channels(ids[0]).call().await.unwrap();
    assert_eq!(channel_0.balance, DEPOSIT - refund_amount);
    assert_eq!(channel_0.totalClaimed, full);
    let channel_1 = settlement.channels(ids[1]).call().await.unwrap();
    assert_eq!(
        channel_1.balance, channel_1.totalClaimed,
        "channel 1 drained to its claims"
    );
    assert_eq!(
        escrow,
        U256::from(9 * (DEPOSIT - full) - refund_amount),
        "escrow holds the unclaimed rest"
    );

    let half = (CHANNELS / 2) as u64;
    let claim_and_settle = claim_gas / CHANNELS as u64 + settle_gas / CHANNELS as u64;
    let direct = direct_gas / half + claim_and_settle;
    let gasless = eip3009_gas / half + claim_and_settle;
    println!(
        "gas per channel lifecycle, batch of {CHANNELS}: direct deposit + claim + settle = {direct}"
    );
    println!(
        "gas per channel lifecycle, batch of {CHANNELS}: EIP-3009 deposit + claim + settle = {gasless}"
    );
    println!(
        "gas per payment at {VOUCHERS_PER_CHANNEL} vouchers per channel: {} (direct), {} (EIP-3009)",
        direct / VOUCHERS_PER_CHANNEL as u64,
        gasless / VOUCHERS_PER_CHANNEL as u64
    );
    println!(
        "gas deposit (EIP-3009) + signed refund: {}",
        eip3009_gas / half + refund_gas
    );
    // Regression guards (gas is deterministic): the plain path meets the 120k goal; the
    // gasless path pays for EIP-3009's nonce slot and second transfer on top.
    assert!(
        direct <= 120_000,
        "direct lifecycle gas {direct} over the 120k goal"
    );
    assert!(
        gasless <= 160_000,
        "EIP-3009 lifecycle gas {gasless} regressed"
    );
}
