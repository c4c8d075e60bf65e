//! [`SettlementClient`]: the settlement and token contracts, from the device wallet.

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::sol_types::Eip712Domain;
use m2m_contracts::bindings::{BatchSettlement, ChannelConfig, IBatchSettlement, TestToken};
use m2m_contracts::eip712::{self, ClaimEntry};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::Mutex;

use super::{SharedSigner, WalletTxSigner};

/// How often receipts are polled on a loopback RPC endpoint.
pub const LOCAL_RECEIPT_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// How long a sent transaction may stay unmined before the send fails (a claim or relay that
/// failed is retried by its caller; one that waited for ever would hold a stop for ever).
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(600);
/// The same on a loopback endpoint (a dev chain mines at once).
const LOCAL_RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The one send lock of each sender on each chain in this process. Every client of one device
/// key (the EVM seller, the gateway, the control socket's withdrawals) takes it across filling
/// and submitting, and nonces come from the node's pending count under it: two clients with
/// nonce caches of their own would hand out one nonce twice or leave a gap, and a transaction
/// behind a gap is never mined.
fn sender_lock(chain_id: u64, sender: Address) -> Arc<Mutex<()>> {
    type SendLocks = HashMap<(u64, Address), Arc<Mutex<()>>>;
    static LOCKS: LazyLock<std::sync::Mutex<SendLocks>> = LazyLock::new(Default::default);
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry((chain_id, sender)).or_default().clone()
}

/// A chain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC endpoint is not a URL.
    #[error("RPC endpoint {0:?} is not a URL")]
    Endpoint(String),
    /// A JSON-RPC request failed (node down, bad response).
    #[error("{what}: {source}")]
    Rpc {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: alloy::transports::TransportError,
    },
    /// A contract call or transaction could not be sent (including reverts found by estimation).
    #[error("{what}: {source}")]
    Contract {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: alloy::contract::Error,
    },
    /// A sent transaction was not confirmed.
    #[error("{what}: {source}")]
    Pending {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: alloy::providers::PendingTransactionError,
    },
    /// A transaction was mined but reverted.
    #[error("{what}: transaction {tx} reverted")]
    Reverted {
        /// What was being done.
        what: &'static str,
        /// Its hash.
        tx: B256,
    },
    /// The wallet could not sign.
    #[error("signing: {0}")]
    Signer(#[from] m2m_wallet::SignerError),
}

/// A channel as the contract holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnChainChannel {
    /// Escrowed balance (including what is claimed but not yet settled out).
    pub balance: u128,
    /// Cumulative total claimed.
    pub total_claimed: u128,
    /// A pending timed withdrawal: amount and when it started (seconds).
    pub withdrawal: Option<(u128, u64)>,
    /// The next refund nonce.
    pub refund_nonce: u64,
}

impl OnChainChannel {
    /// What vouchers may still be backed by: the balance minus a pending withdrawal (the payer
    /// takes that out when the delay ends, whatever was charged after the withdrawal began).
    pub fn usable_balance(&self) -> u128 {
        self.balance
            .saturating_sub(self.withdrawal.map_or(0, |(amount, _)| amount))
    }
}

/// A token's EIP-712 identity (for EIP-3009 authorizations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// `name()`.
    pub name: String,
    /// `version()`.
    pub version: String,
}

/// The settlement contract and tokens on one chain, sending as the device wallet.
#[derive(Debug)]
pub struct SettlementClient {
    provider: DynProvider,
    signer: WalletTxSigner,
    chain_id: u64,
    settlement: Address,
    domain: Eip712Domain,
    /// This sender's lock on this chain, shared with every client of it (see [`sender_lock`]).
    send_lock: Arc<Mutex<()>>,
    /// How long [`Self::send`] waits for a receipt.
    receipt_timeout: Duration,
}

impl SettlementClient {
    /// Connects to `rpc_url`, reads the chain id, and uses the settlement contract at `settlement`.
    pub async fn connect(
        rpc_url: &str,
        signer: SharedSigner,
        settlement: Address,
    ) -> Result<Self, ChainError> {
        let url = rpc_url
            .parse()
            .map_err(|_| ChainError::Endpoint(rpc_url.to_owned()))?;
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::new(WalletTxSigner(signer.clone())))
            // Our client, with connect and response deadlines: a wedged node fails a call
            // instead of holding a claim or a relayed deposit for ever.
            .connect_reqwest(crate::http_client::client(), url)
            .erased();
        let local = provider.client().is_local();
        if local {
            // A local dev chain (anvil) mines at once; alloy's 250 ms default for local
            // endpoints would make every on-chain payment wait a quarter second for its receipt.
            provider.client().set_poll_interval(LOCAL_RECEIPT_POLL);
        }
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|source| ChainError::Rpc {
                what: "reading the chain id",
                source,
            })?;
        let signer_address = signer.evm_address();
        Ok(Self {
            provider,
            signer: WalletTxSigner(signer),
            chain_id,
            settlement,
            domain: eip712::settlement_domain(chain_id, settlement),
            send_lock: sender_lock(chain_id, signer_address),
            receipt_timeout: if local {
                LOCAL_RECEIPT_TIMEOUT
            } else {
                RECEIPT_TIMEOUT
            },
        })
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The settlement contract.
    pub fn settlement(&self) -> Address {
        self.settlement
    }

    /// The address transactions are sent from (the device's EVM address).
    pub fn provider_address(&self) -> Address {
        self.signer.0.evm_address()
    }

    /// The settlement contract's EIP-712 domain.
    pub fn domain(&self) -> &Eip712Domain {
        &self.domain
    }

    /// The provider (reads; sends go through this client to keep nonces ordered).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// A token's `name()` and `version()`.
    pub async fn token_info(&self, token: Address) -> Result<TokenInfo, ChainError> {
        let contract = TestToken::new(token, &self.provider);
        let read = |source| ChainError::Contract {
            what: "reading the token's EIP-712 name and version",
            source,
        };
        Ok(TokenInfo {
            name: contract.name().call().await.map_err(read)?,
            version: contract.version().call().await.map_err(read)?,
        })
    }

    /// A token balance.
    pub async fn token_balance(&self, token: Address, owner: Address) -> Result<U256, ChainError> {
        TestToken::new(token, &self.provider)
            .balanceOf(owner)
            .call()
            .await
            .map_err(|source| ChainError::Contract {
                what: "reading a token balance",
                source,
            })
    }

    /// A channel's on-chain state.
    pub async fn channel(&self, id: B256) -> Result<OnChainChannel, ChainError> {
        let contract = BatchSettlement::new(self.settlement, &self.provider);
        let read = |source| ChainError::Contract {
            what: "reading a channel",
            source,
        };
        let state = contract.channels(id).call().await.map_err(read)?;
        let pending = contract.pendingWithdrawals(id).call().await.map_err(read)?;
        let nonce = contract.refundNonce(id).call().await.map_err(read)?;
        let initiated: u64 = pending.initiatedAt.to();
        Ok(OnChainChannel {
            balance: state.balance,
            total_claimed: state.totalClaimed,
            withdrawal: (initiated != 0).then_some((pending.amount, initiated)),
            refund_nonce: nonce.saturating_to(),
        })
    }

    /// Deposits `amount` into `config`'s channel through `collector` (e.g. an EIP-3009
    /// authorization the payer signed), paying the gas.
    pub async fn deposit(
        &self,
        config: ChannelConfig,
        amount: u128,
        collector: Address,
        collector_data: Bytes,
    ) -> Result<B256, ChainError> {
        let contract = BatchSettlement::new(self.settlement, &self.provider);
        self.send(
            contract.deposit(config, amount, collector, collector_data),
            "depositing into a channel",
        )
        .await
    }

    /// Claims every row (signed by this wallet as receiver authorizer) and sweeps the claimed
    /// funds of `receiver` in `token` out to the receiver. Returns both transaction hashes.
    pub async fn claim_and_settle(
        &self,
        rows: Vec<IBatchSettlement::VoucherClaim>,
        receiver: Address,
        token: Address,
    ) -> Result<(B256, B256), ChainError> {
        let entries = rows
            .iter()
            .map(|row| ClaimEntry {
                channelId: eip712::channel_id(&self.domain, &row.voucher.channel),
                maxClaimableAmount: row.voucher.maxClaimableAmount,
                totalClaimed: row.totalClaimed,
            })
            .collect();
        let digest = eip712::claim_batch_digest(&self.domain, entries);
        let signature = Bytes::from(self.signer.0.sign_evm_digest(&digest)?.as_bytes().to_vec());
        let contract = BatchSettlement::new(self.settlement, &self.provider);
        let claim = self
            .send(
                contract.claimWithSignature(rows, signature),
                "claiming vouchers",
            )
            .await?;
        let settle = self
            .send(contract.settle(receiver, token), "settling claimed funds")
            .await?;
        Ok((claim, settle))
    }

    /// Starts the payer's timed withdrawal of `amount` from `config`'s channel.
    pub async fn initiate_withdraw(
        &self,
        config: ChannelConfig,
        amount: u128,
    ) -> Result<B256, ChainError> {
        let contract = BatchSettlement::new(self.settlement, &self.provider);
        self.send(
            contract.initiateWithdraw(config, amount),
            "starting a withdrawal",
        )
        .await
    }

    /// Finishes a timed withdrawal whose delay has passed (pays what is still unclaimed).
    pub async fn finalize_withdraw(&self, config: ChannelConfig) -> Result<B256, ChainError> {
        let contract = BatchSettlement::new(self.settlement, &self.provider);
        self.send(contract.finalizeWithdraw(config), "finishing a withdrawal")
            .await
    }

    /// The newest block's timestamp (the contract's clock).
    pub async fn chain_time(&self) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|source| ChainError::Rpc {
                what: "reading the newest block",
                source,
            })?;
        Ok(block.map_or(0, |block| block.header.timestamp))
    }

    /// Submits an EIP-3009 `transferWithAuthorization` (the x402 `exact` scheme).
    pub async fn transfer_with_authorization(
        &self,
        token: Address,
        authorization: &eip712::TransferWithAuthorization,
        signature: &alloy::primitives::Signature,
    ) -> Result<B256, ChainError> {
        let contract = TestToken::new(token, &self.provider);
        let auth = authorization;
        self.send(
            contract.transferWithAuthorization(
                auth.from,
                auth.to,
                auth.value,
                auth.validAfter,
                auth.validBefore,
                auth.nonce,
                27 + u8::from(signature.v()),
                signature.r().into(),
                signature.s().into(),
            ),
            "transferWithAuthorization",
        )
        .await
    }

    /// Whether an EIP-3009 nonce of `authorizer` was used.
    pub async fn authorization_used(
        &self,
        token: Address,
        authorizer: Address,
        nonce: B256,
    ) -> Result<bool, ChainError> {
        TestToken::new(token, &self.provider)
            .authorizationState(authorizer, nonce)
            .call()
            .await
            .map_err(|source| ChainError::Contract {
                what: "reading an EIP-3009 nonce",
                source,
            })
    }

    /// Sends one transaction and waits until it is mined and succeeded.
    pub async fn send<P: Provider, D: CallDecoder>(
        &self,
        call: CallBuilder<P, D>,
        what: &'static str,
    ) -> Result<B256, ChainError> {
        let pending = {
            let _one_at_a_time = self.send_lock.lock().await;
            call.send()
                .await
                .map_err(|source| ChainError::Contract { what, source })?
        };
        let receipt = pending
            .with_timeout(Some(self.receipt_timeout))
            .get_receipt()
            .await
            .map_err(|source| ChainError::Pending { what, source })?;
        if !receipt.status() {
            return Err(ChainError::Reverted {
                what,
                tx: receipt.transaction_hash,
            });
        }
        Ok(receipt.transaction_hash)
    }
}
