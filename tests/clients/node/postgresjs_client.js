// postgres.js through the proxy, as agent:reporting: its pipelining (many queries written
// before the first answer), named prepared statements (and `prepare: false`), cursors,
// simple queries and transactions.
'use strict';
const fs = require('node:fs');
const postgres = require('postgres');
const { assert, stack, check, refused, run, MASKED_EMAIL, MASKED_PHONE } = require('./checks');

async function main() {
  for (const prepare of [true, false]) {
    const sql = postgres({
      host: stack.proxy.host,
      port: stack.proxy.port,
      database: 'shop',
      username: 'agent:reporting',
      password: stack.tokens['agent:reporting'],
      ssl: { ca: fs.readFileSync(stack.proxy.ca_file) },
      max: 1, // one connection: the pipelined queries share it
      prepare,
      connection: { application_name: 'postgres.js' },
    });
    const mode = prepare ? 'prepared' : 'unnamed';
    await check(`${mode}: a read is masked`, async () => {
      const rows = await sql`SELECT id, email, phone FROM customers WHERE id = ${42} LIMIT 1`;
      assert.equal(rows.length, 1);
      assert.match(rows[0].email, MASKED_EMAIL);
      assert.match(rows[0].phone, MASKED_PHONE);
    });
    await check(`${mode}: 50 pipelined queries`, async () => {
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) =>
        sql`SELECT id, email FROM customers WHERE id = ${i + 1} LIMIT 1`));
      assert.deepEqual(results.map((r) => r[0].id), Array.from({ length: 50 }, (_, i) => i + 1));
      results.forEach((r) => assert.match(r[0].email, MASKED_EMAIL));
    });
    await check(`${mode}: a refusal in the middle of a pipeline fails only its query`, async () => {
      const settled = await Promise.allSettled([
        sql`SELECT 1 AS a`,
        sql`SELECT ssn FROM customers WHERE id = ${2} LIMIT 1`,
        sql`SELECT 3 AS c`,
      ]);
      assert.deepEqual([...settled[0].value], [{ a: 1 }]);
      assert.equal(settled[1].reason.code, '42501');
      assert.match(settled[1].reason.message, /public\.customers\.ssn/);
      assert.deepEqual([...settled[2].value], [{ c: 3 }]);
    });
    await check(`${mode}: transactions commit and a refusal rolls one back`, async () => {
      const [[count], [two]] = await sql.begin(async (tx) => [
        await tx`SELECT count(*)::int AS n FROM orders`,
        await tx`SELECT 2 AS two`,
      ]);
      assert.deepEqual([count.n, two.two], [5000, 2]);
      await refused(() => sql.begin(async (tx) => {
        await tx`SELECT 1`;
        await tx`SELECT card_number FROM payments LIMIT 1`;
      }), '42501', /card_number/);
    });
    await check(`${mode}: a cursor reads 10 rows at a time`, async () => {
      const sizes = [];
      for await (const rows of sql`SELECT id, email FROM customers WHERE id < 100 ORDER BY id LIMIT 35`.cursor(10)) {
        sizes.push(rows.length);
        rows.forEach((r) => assert.match(r.email, MASKED_EMAIL));
      }
      assert.deepEqual(sizes, [10, 10, 10, 5]);
    });
    await check(`${mode}: simple multi-statement query`, async () => {
      const results = await sql`SELECT 1 AS x; SELECT 2 AS y`.simple();
      assert.deepEqual(results.map((r) => [...r]), [[{ x: 1 }], [{ y: 2 }]]);
    });
    await check(`${mode}: the row limit is an error, the connection goes on`, async () => {
      await refused(() => sql`SELECT id FROM orders`, '54000', /row limit of 1000 rows/);
      // postgres.js keeps the rows of a failed query in the next result (it does so
      // against PostgreSQL too): look at the next query's own row, the last one.
      const rows = await sql`SELECT 9 AS nine`;
      assert.deepEqual(rows[rows.length - 1], { nine: 9 });
      assert.deepEqual([...(await sql`SELECT 10 AS ten`)], [{ ten: 10 }]);
    });
    await sql.end();
  }
}

run(main);
