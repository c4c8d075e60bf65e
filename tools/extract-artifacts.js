#!/usr/bin/env node
// Copies ABI and bytecode of the deployable contracts out of forge's `out/` into a small,
// committed `artifacts/` folder that the Rust bindings (alloy `sol!`) compile against.
// Usage: extract-artifacts.js <forge out dir> <artifacts dir>
'use strict';
const fs = require('fs');
const path = require('path');

const CONTRACTS = [
  ['BatchSettlement.sol', 'BatchSettlement'],
  ['ERC3009DepositCollector.sol', 'ERC3009DepositCollector'],
  ['TestToken.sol', 'TestToken'],
];

const [outDir, artifactsDir] = process.argv.slice(2);
if (!outDir || !artifactsDir) {
  process.stderr.write('usage: extract-artifacts.js <forge out dir> <artifacts dir>\n');
  process.exit(2);
}
fs.mkdirSync(artifactsDir, { recursive: true });
for (const [file, name] of CONTRACTS) {
  const source = path.join(outDir, file, `${name}.json`);
  const forge = JSON.parse(fs.readFileSync(source, 'utf8'));
  const artifact = {
    contractName: name,
    abi: forge.abi,
    bytecode: { object: forge.bytecode.object },
    deployedBytecode: { object: forge.deployedBytecode.object },
  };
  fs.writeFileSync(path.join(artifactsDir, `${name}.json`), JSON.stringify(artifact, null, 2) + '\n');
}
