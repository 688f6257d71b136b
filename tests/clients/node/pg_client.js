// node-postgres (pg, pg-cursor, pg-query-stream) through the proxy, as agent:reporting and
// agent:etl of the reference scenario: masking, refusals, cursors, streams, transactions.
'use strict';
const fs = require('node:fs');
const { Client } = require('pg');
const Cursor = require('pg-cursor');
const QueryStream = require('pg-query-stream');
const { assert, stack, check, refused, run, MASKED_EMAIL, MASKED_PHONE } = require('./checks');

function client(identity) {
  return new Client({
    host: stack.proxy.host,
    port: stack.proxy.port,
    database: 'shop',
    user: identity,
    password: stack.tokens[identity],
    application_name: 'node-postgres',
    ssl: { ca: fs.readFileSync(stack.proxy.ca_file) },  // the certificate and its IP checked
  });
}

async function main() {
  const c = client('agent:reporting');
  await c.connect();
  await check('parameterized read is masked', async () => {
    const { rows } = await c.query(
      'SELECT id, email, phone FROM customers WHERE id = $1 LIMIT 1', [42]);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].id, 42);
    assert.match(rows[0].email, MASKED_EMAIL);
    assert.match(rows[0].phone, MASKED_PHONE);
  });
  await check('named prepared statement, three executions', async () => {
    for (const id of [1, 2, 3]) {
      const { rows } = await c.query({
        name: 'customer_email', text: 'SELECT id, email FROM customers WHERE id = $1 LIMIT 1',
        values: [id],
      });
      assert.deepEqual(rows.map((r) => r.id), [id]);
      assert.match(rows[0].email, MASKED_EMAIL);
    }
  });
  await check('a secret column is refused, the session goes on', async () => {
    const error = await refused(
      () => c.query('SELECT ssn FROM customers WHERE id = $1 LIMIT 1', [1]),
      '42501', /public\.customers\.ssn/);
    assert.match(error.detail, /decision_id=/);
    const { rows } = await c.query('SELECT count(*)::int AS n FROM orders');
    assert.equal(rows[0].n, 5000);
  });
  await check('a refusal in a transaction aborts it like an error', async () => {
    await c.query('BEGIN');
    await refused(() => c.query('SELECT card_number FROM payments LIMIT 1'), '42501',
      /card_number/);
    await refused(() => c.query('SELECT 1'), '25P02', /current transaction is aborted/);
    await c.query('ROLLBACK');
    assert.deepEqual((await c.query('SELECT 2 AS two')).rows, [{ two: 2 }]);
  });
  await check('multi-statement simple query', async () => {
    const results = await c.query('SELECT 1 AS a; SELECT 2 AS b');
    assert.deepEqual(results.map((r) => r.rows), [[{ a: 1 }], [{ b: 2 }]]);
  });
  await check('pg-cursor reads 5 rows at a time', async () => {
    const cursor = c.query(new Cursor(
      'SELECT id, email FROM customers WHERE id < 100 ORDER BY id LIMIT 12'));
    const sizes = [];
    for (;;) {
      const rows = await cursor.read(5);
      if (!rows.length) break;
      sizes.push(rows.length);
      rows.forEach((r) => assert.match(r.email, MASKED_EMAIL));
    }
    await cursor.close();
    assert.deepEqual(sizes, [5, 5, 2]);
  });
  await check('pg-query-stream in batches of 30', async () => {
    const ids = await new Promise((resolve, reject) => {
      const seen = [];
      const stream = c.query(new QueryStream(
        'SELECT id, email FROM customers WHERE id < 1000 ORDER BY id LIMIT 100', [],
        { batchSize: 30 }));
      stream.on('data', (row) => seen.push(row.id));
      stream.on('end', () => resolve(seen));
      stream.on('error', reject);
    });
    assert.equal(ids.length, 100);
    assert.deepEqual(ids.slice(0, 3), [1, 2, 3]);
  });
  await check('the row limit ends a read with an error, the session goes on', async () => {
    await refused(() => c.query('SELECT id FROM orders'), '54000', /row limit of 1000 rows/);
    assert.deepEqual((await c.query('SELECT 3 AS three')).rows, [{ three: 3 }]);
  });
  await c.end();

  const etl = client('agent:etl');
  await etl.connect();
  await check('etl writes orders in a transaction', async () => {
    await etl.query('BEGIN');
    const inserted = await etl.query(
      'INSERT INTO orders (id, customer_id, total, status) VALUES ($1, $2, $3, $4) RETURNING id',
      [900001, 1, 9.5, 'new']);
    assert.equal(inserted.rowCount, 1);
    await etl.query('ROLLBACK');
    const { rows } = await etl.query('SELECT count(*)::int AS n FROM orders WHERE id = $1', [900001]);
    assert.equal(rows[0].n, 0);
  });
  await check('etl may not write payments', async () => {
    await refused(() => etl.query('DELETE FROM payments WHERE id = $1', [1]), '42501',
      /may not write to public\.payments/);
  });
  await etl.end();
}

run(main);
