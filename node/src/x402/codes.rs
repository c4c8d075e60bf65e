//! Error codes as the x402 v2 specification and its EVM schemes name them; they travel in
//! `PaymentRequired.error`, `VerifyResponse.invalidReason` and `SettlementResponse.errorReason`.

/// Something unexpected failed on the server.
pub const UNEXPECTED: &str = "unexpected_settle_error";
/// The payment header is not a valid x402 v2 payload.
pub const INVALID_PAYLOAD: &str = "invalid_payload";
/// The payload's `accepted` requirements are not ones this resource offers.
pub const INVALID_PAYMENT_REQUIREMENTS: &str = "invalid_payment_requirements";
/// The scheme is not offered here.
pub const UNSUPPORTED_SCHEME: &str = "unsupported_scheme";
/// The network is not offered here.
pub const INVALID_NETWORK: &str = "invalid_network";
/// Ours: the route's sensor has no reading now (HTTP 503); nothing was charged.
pub const SENSOR_UNAVAILABLE: &str = "sensor_unavailable";
/// The x402 version is not 2.
pub const INVALID_X402_VERSION: &str = "invalid_x402_version";

/// `exact`: the recipient is not the seller.
pub const EXACT_RECIPIENT_MISMATCH: &str = "invalid_exact_evm_recipient_mismatch";
/// `exact`: the signature does not recover `from`.
pub const EXACT_SIGNATURE: &str = "invalid_exact_evm_signature";
/// `exact`: `validBefore` has passed (or is too close).
pub const EXACT_VALID_BEFORE: &str = "invalid_exact_evm_payload_authorization_valid_before";
/// `exact`: `validAfter` is in the future.
pub const EXACT_VALID_AFTER: &str = "invalid_exact_evm_payload_authorization_valid_after";
/// `exact`: the value is not the price.
pub const EXACT_VALUE: &str = "invalid_exact_evm_authorization_value";
/// `exact`: the authorization nonce was used (a replay).
pub const EXACT_NONCE_USED: &str = "invalid_exact_evm_nonce_already_used";
/// `exact`: the payer cannot cover the value.
pub const EXACT_INSUFFICIENT_BALANCE: &str = "invalid_exact_evm_insufficient_balance";
/// `exact`: the transfer failed on chain.
pub const EXACT_TRANSACTION_FAILED: &str = "invalid_exact_evm_transaction_failed";

/// `batch-settlement`: malformed payload.
pub const BATCH_PAYLOAD_TYPE: &str = "invalid_batch_settlement_evm_payload_type";
/// `batch-settlement`: refund payload refused.
pub const BATCH_REFUND_PAYLOAD: &str = "invalid_batch_settlement_evm_refund_payload";
/// `batch-settlement`: the voucher's channel id is not the config's hash.
pub const BATCH_CHANNEL_ID_MISMATCH: &str = "invalid_batch_settlement_evm_channel_id_mismatch";
/// `batch-settlement`: no such funded channel.
pub const BATCH_CHANNEL_NOT_FOUND: &str = "invalid_batch_settlement_evm_channel_not_found";
/// `batch-settlement`: the config names another receiver.
pub const BATCH_RECEIVER_MISMATCH: &str = "invalid_batch_settlement_evm_receiver_mismatch";
/// `batch-settlement`: the config names another receiver authorizer.
pub const BATCH_RECEIVER_AUTHORIZER_MISMATCH: &str =
    "invalid_batch_settlement_evm_receiver_authorizer_mismatch";
/// `batch-settlement`: the config names another token.
pub const BATCH_TOKEN_MISMATCH: &str = "invalid_batch_settlement_evm_token_mismatch";
/// `batch-settlement`: the config's withdraw delay is not the seller's.
pub const BATCH_WITHDRAW_DELAY_MISMATCH: &str =
    "invalid_batch_settlement_evm_withdraw_delay_mismatch";
/// `batch-settlement`: the voucher signature is not the payer authorizer's.
pub const BATCH_VOUCHER_SIGNATURE: &str = "invalid_batch_settlement_evm_voucher_signature";
/// `batch-settlement`: the voucher is not `charged + price` (corrective 402).
pub const BATCH_CUMULATIVE_MISMATCH: &str =
    "invalid_batch_settlement_evm_cumulative_amount_mismatch";
/// `batch-settlement`: the voucher is below what was already claimed (corrective 402).
pub const BATCH_CUMULATIVE_BELOW_CLAIMED: &str =
    "invalid_batch_settlement_evm_cumulative_below_claimed";
/// `batch-settlement`: the voucher exceeds the deposit.
pub const BATCH_CUMULATIVE_EXCEEDS_BALANCE: &str =
    "invalid_batch_settlement_evm_cumulative_exceeds_balance";
/// `batch-settlement`: only EIP-3009 deposits are accepted.
pub const BATCH_ERC3009_REQUIRED: &str =
    "invalid_batch_settlement_evm_erc3009_authorization_required";
/// `batch-settlement`: the deposit authorization expired.
pub const BATCH_VALID_BEFORE_EXPIRED: &str =
    "invalid_batch_settlement_evm_payload_authorization_valid_before";
/// `batch-settlement`: the deposit authorization is not valid yet.
pub const BATCH_VALID_AFTER_IN_FUTURE: &str =
    "invalid_batch_settlement_evm_payload_authorization_valid_after";
/// `batch-settlement`: the deposit transaction failed.
pub const BATCH_DEPOSIT_TRANSACTION_FAILED: &str =
    "invalid_batch_settlement_evm_deposit_transaction_failed";
/// `batch-settlement`: reading the chain failed.
pub const BATCH_RPC_READ_FAILED: &str = "invalid_batch_settlement_evm_rpc_read_failed";

// Codes of our own, for priced MQTT topics (x402 names none for a transport without URLs).

/// The paid-for reading's key id is not (or no longer) sold: nothing was charged.
pub const READING_KEY_UNKNOWN: &str = "m2m_reading_key_unknown";
/// The buyer's key-agreement key is missing, malformed, or not the key that signs its vouchers.
pub const BUYER_KEY_INVALID: &str = "m2m_buyer_key_invalid";
/// A tick stream has K readings on credit: the next payment must be a voucher covering them.
pub const TICKS_VOUCHER_DUE: &str = "m2m_ticks_voucher_due";
/// A tick that does not extend its stream's chain, or names no stream of this seller.
pub const TICK_INVALID: &str = "m2m_tick_invalid";
