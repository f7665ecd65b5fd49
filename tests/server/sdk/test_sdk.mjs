// End-to-end tests of asa-serve through the official OpenAI Node SDK.
// usage: node --test test_sdk.mjs   with ASA_SERVE=path/to/asa-serve ASA_TEST_MODEL=dir
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import OpenAI from 'openai';

const SERVE = process.env.ASA_SERVE;
const MODEL = process.env.ASA_TEST_MODEL;
let proc, client, port;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

async function waitHealthy(base) {
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(`${base}/health`);
      if (r.status === 200) return;
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('asa-serve did not become healthy');
}

before(async () => {
  assert.ok(SERVE && MODEL, 'set ASA_SERVE and ASA_TEST_MODEL');
  port = await freePort();
  proc = spawn(SERVE, ['--model', MODEL, '--host', '127.0.0.1', '--port', String(port),
    '--served-model-name', 'sdk-model', '--api-key', 'sk-test', '--log-level', 'warn'],
  { stdio: ['ignore', 'inherit', 'inherit'] });
  await waitHealthy(`http://127.0.0.1:${port}`);
  client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'sk-test', maxRetries: 0 });
});

after(async () => {
  if (!proc) return;
  const done = new Promise((r) => proc.on('exit', (code) => r(code)));
  proc.kill('SIGTERM');
  assert.equal(await done, 0);
});

test('models.list', async () => {
  const page = await client.models.list();
  assert.equal(page.data[0].id, 'sdk-model');
});

test('completions.create', async () => {
  const r = await client.completions.create({ model: 'sdk-model', prompt: 'Hello', max_tokens: 5,
    temperature: 0, ignore_eos: true });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 5);
});

test('n > 1 and seeds', async () => {
  const body = { model: 'sdk-model', prompt: 'abc', max_tokens: 12, n: 3, seed: 11, temperature: 1,
    ignore_eos: true };
  const a = await client.completions.create(body);
  const b = await client.completions.create(body);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.equal(a.usage.completion_tokens, 36);
});

test('streaming with usage', async () => {
  const body = { model: 'sdk-model', prompt: 'Stream', max_tokens: 20, temperature: 0.8, seed: 5,
    ignore_eos: true };
  const full = (await client.completions.create(body)).choices[0].text;
  const stream = await client.completions.create({ ...body, stream: true,
    stream_options: { include_usage: true } });
  let text = '', usage = null, finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) { text += c.text; if (c.finish_reason) finish = c.finish_reason; }
  }
  assert.equal(text, full);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 20);
});

test('chat, streaming chat', async () => {
  const messages = [{ role: 'user', content: 'hi' }];
  const r = await client.chat.completions.create({ model: 'sdk-model', messages, max_tokens: 6,
    temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  const stream = await client.chat.completions.create({ model: 'sdk-model', messages, max_tokens: 6,
    temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '', role = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
    }
  }
  assert.equal(role, 'assistant');
  assert.equal(text, r.choices[0].message.content);
  assert.equal(usage.completion_tokens, r.usage.completion_tokens);
});

test('stop strings', async () => {
  const logit_bias = {};
  for (let b = 97; b <= 122; b++) logit_bias[String(b)] = 30;
  const body = { model: 'sdk-model', prompt: 'S', max_tokens: 40, temperature: 3, seed: 8,
    ignore_eos: true, logit_bias };
  const text = (await client.completions.create(body)).choices[0].text;
  let start = -1, stop = '';
  for (let i = 5; i + 3 <= text.length; i++) {
    const s = text.slice(i, i + 3);
    if (text.indexOf(s) === i) { start = i; stop = s; break; }
  }
  assert.ok(start > 0, text);
  const r = await client.completions.create({ ...body, stop: [stop] });
  assert.equal(r.choices[0].text, text.slice(0, start));
  assert.equal(r.choices[0].finish_reason, 'stop');
  const stream = await client.completions.create({ ...body, stop, stream: true });
  let streamed = '';
  for await (const chunk of stream) for (const c of chunk.choices) streamed += c.text;
  assert.equal(streamed, text.slice(0, start));
});

test('logprobs and echo', async () => {
  const r = await client.completions.create({ model: 'sdk-model', prompt: 'lp', max_tokens: 4,
    temperature: 0, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, r.usage.completion_tokens);
  assert.ok(lp.token_logprobs.every((v) => v <= 0));
  const e = await client.completions.create({ model: 'sdk-model', prompt: 'echo this', max_tokens: 2,
    echo: true, temperature: 0 });
  assert.ok(e.choices[0].text.startsWith('echo this'));
});

test('errors arrive as APIError with OpenAI shape', async () => {
  await assert.rejects(client.completions.create({ model: 'sdk-model', prompt: 'x', temperature: -2 }),
    (err) => { assert.equal(err.status, 400); assert.equal(err.param, 'temperature'); return true; });
  await assert.rejects(client.completions.create({ model: 'nope', prompt: 'x' }),
    (err) => { assert.equal(err.status, 404); return true; });
  await assert.rejects(client.completions.create({ model: 'sdk-model', prompt: 'x', best_of: 3 }),
    (err) => { assert.equal(err.status, 400); assert.equal(err.param, 'best_of'); return true; });
  await assert.rejects(client.completions.create({ model: 'sdk-model', prompt: 'x', max_tokens: 999999 }),
    (err) => { assert.equal(err.status, 400); assert.match(err.message, /4096/); return true; });
  const bad = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (err) => { assert.equal(err.status, 401); return true; });
});
