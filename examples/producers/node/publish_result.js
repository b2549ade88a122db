// Resume the workflow that sent a job: publish the worker's result to the relay topic.
//
//   node publish_result.js '{"status": "shipped"}' < job.json      # resume the step
//   node publish_result.js --fail CODE MESSAGE [DETAILS] < job.json  # fail it on purpose
//
// The job comes from the workflow and carries callback_url, method and expires_at.
// Needs @google-cloud/pubsub, GOOGLE_CLOUD_PROJECT, and RELAY_TOPIC (default
// workflows-callback-relay). Contract: schemas/callback-message.schema.json.
'use strict';

const fs = require('node:fs');
const {PubSub} = require('@google-cloud/pubsub');

const RELAY_TOPIC = process.env.RELAY_TOPIC || 'workflows-callback-relay';

// Copy callback_url, method and expires_at from the job; the result is the payload.
function relayMessage(job, payload) {
  return {
    callback_url: job.callback_url,
    payload: payload,
    method: job.method,
    expires_at: job.expires_at,
  };
}

// A payload that makes the waiting step raise CallbackError.
function errorPayload(code, message, details = {}) {
  return {error: {code: code, message: message, details: details}};
}

async function publish(pubsub, job, payload) {
  const data = Buffer.from(JSON.stringify(relayMessage(job, payload)), 'utf8');
  return pubsub.topic(RELAY_TOPIC).publishMessage({data: data}); // the message id
}

async function main(args) {
  const job = JSON.parse(fs.readFileSync(0, 'utf8'));
  const payload =
    args[0] === '--fail'
      ? errorPayload(args[1], args[2], args[3] ? JSON.parse(args[3]) : {})
      : JSON.parse(args[0]);
  const pubsub = new PubSub({projectId: process.env.GOOGLE_CLOUD_PROJECT});
  try {
    console.log(await publish(pubsub, job, payload));
  } finally {
    await pubsub.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}

module.exports = {relayMessage, errorPayload, publish};
