// The reference x402 buyer: @x402/fetch wrapping fetch, with the @x402/evm `exact` or
// `batch-settlement` client scheme and a viem account. Reads a JSON request on stdin
// ({url, payerKey, scheme, count, asset, maxAmountPerPayment}), fetches the URL `count` times, prints one JSON result.
// Used by the Rust integration tests to prove an off-the-shelf client pays our seller.
import { readFileSync } from 'node:fs';
import { privateKeyToAccount } from 'viem/accounts';
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from '@x402/fetch';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { BatchSettlementEvmScheme } from '@x402/evm/batch-settlement/client';

const input = JSON.parse(readFileSync(0, 'utf8'));
const account = privateKeyToAccount(input.payerKey);
const scheme = input.scheme === 'exact' ? new ExactEvmScheme(account) : new BatchSettlementEvmScheme(account);
const client = new x402Client().register('eip155:*', scheme);
// A local test token is not one of the SDK's default assets: allow it explicitly, with a cap.
client.setSpendControls({
  allowedAssets: [{ network: 'eip155:*', asset: input.asset, maxAmountPerPayment: input.maxAmountPerPayment }],
});
const paidFetch = wrapFetchWithPayment(fetch, client);
const results = [];
for (let i = 0; i < input.count; i += 1) {
  const response = await paidFetch(input.url);
  const header = response.headers.get('PAYMENT-RESPONSE');
  results.push({
    status: response.status,
    body: await response.text(),
    settlement: header ? decodePaymentResponseHeader(header) : null,
  });
}
process.stdout.write(JSON.stringify({ payer: account.address, results }));
