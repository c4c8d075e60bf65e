#!/usr/bin/env node
// A `solc`-compatible command line over solc-js (npm `solc`), for forge.
//
// Why hand-written: forge drives a native `solc` binary, which cannot be downloaded here; solc-js
// is the same compiler built to WebAssembly but has a different command line. forge only needs
// two entry points, so this shim answers exactly those, the way native solc does:
//   solc --version                   -> "Version: <x.y.z+commit...>"
//   solc --standard-json [options]   -> standard JSON in on stdin, standard JSON out on stdout
// Options forge passes (--base-path, --include-path, --allow-paths) steer the import callback.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

function usage(message) {
  process.stderr.write(`solc-shim: ${message}\nsupported: --version | --standard-json [--base-path P] [--include-path P]... [--allow-paths P,...]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { mode: null, basePath: process.cwd(), includePaths: [], allowPaths: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--version' || arg === '-v') opts.mode = 'version';
    else if (arg === '--standard-json') opts.mode = 'standard-json';
    else if (arg === '--base-path') opts.basePath = value();
    else if (arg === '--include-path') opts.includePaths.push(value());
    else if (arg === '--allow-paths') opts.allowPaths.push(...value().split(','));
    else if (arg.startsWith('--')) { /* native-only flags (e.g. --no-color) change nothing here */ }
    else usage(`unexpected argument ${arg}`);
  }
  return opts;
}

function importCallback(opts) {
  const roots = [opts.basePath, ...opts.includePaths];
  return (importPath) => {
    const candidates = path.isAbsolute(importPath)
      ? [importPath]
      : roots.map((root) => path.resolve(root, importPath));
    for (const candidate of candidates) {
      try {
        return { contents: fs.readFileSync(candidate, 'utf8') };
      } catch (_) { /* try the next root */ }
    }
    return { error: `file not found: ${importPath} (searched ${roots.join(', ')})` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.mode === 'version') {
    // Same shape as native solc; forge reads the "Version:" line.
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  if (opts.mode !== 'standard-json') usage('no mode given');
  const input = fs.readFileSync(0, 'utf8');
  const output = solc.compile(input, { import: importCallback(opts) });
  process.stdout.write(output);
}

main();
