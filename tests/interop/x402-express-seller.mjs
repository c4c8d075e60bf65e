// The reference x402 seller: an express app behind @x402/express's paymentMiddleware, selling
// GET /weather for an `exact` EIP-3009 payment. Settlement goes through the reference
// facilitator (@x402/core + @x402/evm, in process, paying gas from `facilitatorKey`) or, when
// `facilitatorUrl` is given, through that remote facilitator over HTTP (e.g. our /verify and
// /settle, with `facilitatorApiKey` as a bearer token). Reads its JSON config on stdin, prints {"port": N} once listening, runs until killed.
import { readFileSync } from 'node:fs';
import express from 'express';
import { createWalletClient, defineChain, http, publicActions } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { paymentMiddleware } from '@x402/express';
import { HTTPFacilitatorClient, x402ResourceServer } from '@x402/core/server';
import { x402Facilitator } from '@x402/core/facilitator';
import { ExactEvmScheme as ExactServerScheme } from '@x402/evm/exact/server';
import { ExactEvmScheme as ExactFacilitatorScheme } from '@x402/evm/exact/facilitator';
import { toFacilitatorEvmSigner } from '@x402/evm';

const input = JSON.parse(readFileSync(0, 'utf8'));
const network = `eip155:${input.chainId}`;

function inProcessFacilitator() {
  const chain = defineChain({
    id: input.chainId,
    name: 'anvil',
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [input.rpcUrl] } },
  });
  const account = privateKeyToAccount(input.facilitatorKey);
  const wallet = createWalletClient({ account, chain, transport: http(input.rpcUrl) }).extend(publicActions);
  const signer = toFacilitatorEvmSigner({ ...wallet, address: account.address });
  const facilitator = new x402Facilitator().register(network, new ExactFacilitatorScheme(signer));
  return {
    verify: (payload, requirements) => facilitator.verify(payload, requirements),
    settle: (payload, requirements) => facilitator.settle(payload, requirements),
    getSupported: async () => facilitator.getSupported(),
  };
}

// A remote facilitator that wants an API key gets it on every call, as a bearer token.
function remoteFacilitator() {
  const auth = input.facilitatorApiKey ? { Authorization: `Bearer ${input.facilitatorApiKey}` } : {};
  return new HTTPFacilitatorClient({
    url: input.facilitatorUrl,
    createAuthHeaders: async () => ({ verify: auth, settle: auth, supported: auth }),
  });
}

const facilitatorClient = input.facilitatorUrl ? remoteFacilitator() : inProcessFacilitator();
const resourceServer = new x402ResourceServer(facilitatorClient).register(network, new ExactServerScheme());
const routes = {
  'GET /weather': {
    accepts: {
      scheme: 'exact',
      network,
      payTo: input.payTo,
      price: { amount: input.price, asset: input.asset, extra: { name: input.tokenName, version: input.tokenVersion } },
    },
    description: 'weather report',
    mimeType: 'application/json',
  },
};
const app = express();
app.use(paymentMiddleware(routes, resourceServer));
app.get('/weather', (_req, res) => res.json({ report: 'sunny', temperature: 21 }));
const listener = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: listener.address().port })}\n`);
});
