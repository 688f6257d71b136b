// What every driver script here shares: the stack it connects to, and how a check is
// reported. The stack is a JSON file (the path in $PGWARDEN_STACK) with the fields of
// pgwarden's stack.json: proxy.host, proxy.port, proxy.ca_file, tokens.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');

const stack = JSON.parse(fs.readFileSync(process.env.PGWARDEN_STACK, 'utf8'));
const results = { passed: [], failed: [] };

// A masked email (partial_email) and phone (last4), as the policy pack returns them.
const MASKED_EMAIL = /^[a-z]\*\*\*@example\.(com|org|net)$/;
const MASKED_PHONE = /^\*+\d{4}$/;

async function check(name, body) {
  try {
    await body();
    results.passed.push(name);
  } catch (error) {
    results.failed.push(`${name}: ${error.stack || error}`);
  }
}

// The error ``body`` must fail with: SQLSTATE ``code`` and a message that says why.
async function refused(body, code, reason) {
  let error;
  try {
    await body();
  } catch (caught) {
    error = caught;
  }
  assert.ok(error, `expected SQLSTATE ${code}, the statement ran`);
  assert.equal(error.code, code, error.message);
  assert.match(error.message, reason);
  return error;
}

// Run the script's checks; print what passed and what failed as one JSON line, and exit 1
// when anything failed (2 when the script itself broke off).
function run(main) {
  main().then(
    () => {
      console.log(JSON.stringify(results));
      process.exit(results.failed.length ? 1 : 0);
    },
    (error) => {
      results.failed.push(`the script broke off: ${error.stack || error}`);
      console.log(JSON.stringify(results));
      process.exit(2);
    },
  );
}

module.exports = { assert, stack, check, refused, run, MASKED_EMAIL, MASKED_PHONE };
