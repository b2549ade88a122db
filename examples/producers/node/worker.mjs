// A worker: pull jobs from the jobs subscription, do the work, publish each result to
// the relay topic, and only then acknowledge the job (a crash leaves it for redelivery).
//
//   node worker.mjs [--fail | --broken] [--max-jobs N]
//
// --fail fails each waiting step on purpose (CallbackError WORKER_FAILED); --broken
// publishes a result with a typo ("payloa"), which the relay fails fast (CallbackError
// INVALID_MESSAGE). Needs GOOGLE_CLOUD_PROJECT, JOBS_SUBSCRIPTION and RELAY_TOPIC
// (default workflows-callback-relay); locally also PUBSUB_EMULATOR_HOST.
// The job: {"callback_url", "method", "expires_at", "job": {"text": ...}}.
import {PubSub} from '@google-cloud/pubsub';
import {errorPayload, relayMessage} from './publish_result.js';

const RELAY_TOPIC = process.env.RELAY_TOPIC || 'workflows-callback-relay';
const args = process.argv.slice(2);
const mode = args.includes('--fail') ? 'fail' : args.includes('--broken') ? 'broken' : 'work';
const maxJobs = args.includes('--max-jobs') ? Number(args[args.indexOf('--max-jobs') + 1]) : Infinity;

// The work: count the words of job.text and upper-case it.
function doWork(work) {
  return {text: work.text.toUpperCase(), words: work.text.split(/\s+/).filter(Boolean).length};
}

// The message for one job, as the relay topic expects it.
function answer(job) {
  if (mode === 'fail') {
    return relayMessage(job, errorPayload('WORKER_FAILED', 'the worker failed on purpose', {}));
  }
  const message = relayMessage(job, doWork(job.job));
  if (mode === 'broken') {
    message.payloa = message.payload; // the typo the relay fails fast
    delete message.payload;
  }
  return message;
}

const pubsub = new PubSub({projectId: process.env.GOOGLE_CLOUD_PROJECT});
const relayTopic = pubsub.topic(RELAY_TOPIC);
const subscription = pubsub.subscription(process.env.JOBS_SUBSCRIPTION, {
  flowControl: {maxMessages: 1},
});
let handled = 0;

async function stop() {
  await subscription.close();
  await pubsub.close();
}

subscription.on('message', async (received) => {
  try {
    const job = JSON.parse(received.data.toString('utf8'));
    const data = Buffer.from(JSON.stringify(answer(job)), 'utf8');
    const id = await relayTopic.publishMessage({data: data});
    received.ack(); // only once the result is published
    console.log(JSON.stringify({event: mode, job_message_id: received.id, relay_message_id: id}));
  } catch (err) {
    received.nack(); // redeliver: the result was not published
    console.error(`job ${received.id} not answered: ${err.message}`);
    return;
  }
  if (++handled >= maxJobs) await stop();
});
subscription.on('error', async (err) => {
  // NOT_FOUND: no subscription JOBS_SUBSCRIPTION in GOOGLE_CLOUD_PROJECT.
  console.error(`subscription ${process.env.JOBS_SUBSCRIPTION}: ${err.message}`);
  process.exitCode = 1;
  await stop();
});
