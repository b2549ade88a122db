// The TypeScript (ESM) variant of publish_result.js: resume the workflow that sent a job.
//
//   npx tsc && node dist/publish_result.mjs '{"status": "shipped"}' < job.json
//   npx tsc && node dist/publish_result.mjs --fail CODE MESSAGE [DETAILS] < job.json
//
// The same message, byte for byte. `npx tsc` (tsconfig.json) writes dist/publish_result.mjs.
// Needs GOOGLE_CLOUD_PROJECT, and RELAY_TOPIC (default workflows-callback-relay).
import {readFileSync} from 'node:fs';
import {PubSub} from '@google-cloud/pubsub';

const RELAY_TOPIC = process.env.RELAY_TOPIC || 'workflows-callback-relay';

type Json = null | boolean | number | string | Json[] | {[key: string]: Json};

// What the workflow publishes on the jobs topic.
export interface Job {
  callback_url: string;
  method: string;
  expires_at: string;
  job: Json;
}

// What the relay reads (schemas/callback-message.schema.json), in this field order.
export interface RelayMessage {
  callback_url: string;
  payload: Json;
  method: string;
  expires_at: string;
}

export function relayMessage(job: Job, payload: Json): RelayMessage {
  return {
    callback_url: job.callback_url,
    payload: payload,
    method: job.method,
    expires_at: job.expires_at,
  };
}

// A payload that makes the waiting step raise CallbackError.
export function errorPayload(code: string, message: string, details: Json = {}): Json {
  return {error: {code: code, message: message, details: details}};
}

export async function publish(pubsub: PubSub, job: Job, payload: Json): Promise<string> {
  const data = Buffer.from(JSON.stringify(relayMessage(job, payload)), 'utf8');
  return pubsub.topic(RELAY_TOPIC).publishMessage({data: data}); // the message id
}

async function main(args: string[]): Promise<void> {
  const job = JSON.parse(readFileSync(0, 'utf8')) as Job;
  const payload: Json =
    args[0] === '--fail'
      ? errorPayload(args[1], args[2], args[3] ? (JSON.parse(args[3]) as Json) : {})
      : (JSON.parse(args[0]) as Json);
  const pubsub = new PubSub({projectId: process.env.GOOGLE_CLOUD_PROJECT});
  try {
    console.log(await publish(pubsub, job, payload));
  } finally {
    await pubsub.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
