// Drives the x402 reference client (@x402/evm, batch-settlement scheme) the way a buyer would:
// build a channel config from payment requirements, sign an EIP-3009 deposit with its first
// voucher, then a later cumulative voucher. Reads a JSON request on stdin, prints JSON.
// Used by the Rust integration tests to prove off-the-shelf clients can pay our contracts.
import { readFileSync } from 'node:fs';
import { privateKeyToAccount } from 'viem/accounts';
import {
  computeChannelId,
  createBatchSettlementEIP3009DepositPayload,
  signVoucher,
} from '@x402/evm/batch-settlement/client';

const input = JSON.parse(readFileSync(0, 'utf8'));
const payer = privateKeyToAccount(input.payerKey);
const voucherSigner = privateKeyToAccount(input.voucherSignerKey);
const network = `eip155:${input.chainId}`;
const requirements = {
  scheme: 'batch-settlement',
  network,
  amount: input.price,
  asset: input.asset,
  payTo: input.payTo,
  maxTimeoutSeconds: 3600,
  extra: {
    receiverAuthorizer: input.receiverAuthorizer,
    withdrawDelay: input.withdrawDelay,
    name: input.tokenName,
    version: input.tokenVersion,
  },
};
const channelConfig = {
  payer: payer.address,
  payerAuthorizer: voucherSigner.address,
  receiver: input.payTo,
  receiverAuthorizer: input.receiverAuthorizer,
  token: input.asset,
  withdrawDelay: input.withdrawDelay,
  salt: input.salt,
};
const deposit = await createBatchSettlementEIP3009DepositPayload(
  payer, 2, requirements, channelConfig, input.depositAmount, input.price, voucherSigner,
);
const channelId = computeChannelId(channelConfig, network);
const later = await signVoucher(voucherSigner, channelId, input.laterCumulative, network);
process.stdout.write(JSON.stringify({ channelId, channelConfig, deposit: deposit.payload, later }));
