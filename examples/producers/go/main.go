// Command publish_result resumes the workflow that sent a job: it publishes the
// worker's result to the relay topic.
//
//	go run . '{"status": "shipped"}' < job.json    # resume the step
//	go run . --fail CODE MESSAGE [DETAILS] < job.json  # fail it on purpose
//
// The job comes from the workflow and carries callback_url, method and expires_at.
// Needs GOOGLE_CLOUD_PROJECT, and RELAY_TOPIC (default workflows-callback-relay).
// Contract: schemas/callback-message.schema.json.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"cloud.google.com/go/pubsub/v2"
)

// Job is what the workflow publishes on the jobs topic.
type Job struct {
	CallbackURL string          `json:"callback_url"`
	Method      string          `json:"method"`
	ExpiresAt   string          `json:"expires_at"`
	Job         json.RawMessage `json:"job"`
}

// RelayMessage is the relay's message; encoding/json writes the fields in this order.
type RelayMessage struct {
	CallbackURL string `json:"callback_url"`
	Payload     any    `json:"payload"`
	Method      string `json:"method"`
	ExpiresAt   string `json:"expires_at"`
}

// ErrorPayload makes the waiting step raise CallbackError.
type ErrorPayload struct {
	Error CallbackError `json:"error"`
}

type CallbackError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details any    `json:"details"`
}

// relayMessage copies callback_url, method and expires_at from the job; the result is the payload.
func relayMessage(job Job, payload any) RelayMessage {
	return RelayMessage{
		CallbackURL: job.CallbackURL,
		Payload:     payload,
		Method:      job.Method,
		ExpiresAt:   job.ExpiresAt,
	}
}

func publish(ctx context.Context, client *pubsub.Client, topic string, job Job, payload any) (string, error) {
	data, err := json.Marshal(relayMessage(job, payload))
	if err != nil {
		return "", err
	}
	publisher := client.Publisher(topic)
	defer publisher.Stop()
	return publisher.Publish(ctx, &pubsub.Message{Data: data}).Get(ctx) // the message id
}

func main() {
	ctx := context.Background()
	var job Job
	if err := json.NewDecoder(os.Stdin).Decode(&job); err != nil {
		log.Fatalf("reading the job: %v", err)
	}
	args := os.Args[1:]
	var payload any
	switch {
	case len(args) >= 3 && args[0] == "--fail":
		details := json.RawMessage(`{}`)
		if len(args) > 3 {
			details = json.RawMessage(args[3])
		}
		payload = ErrorPayload{Error: CallbackError{Code: args[1], Message: args[2], Details: details}}
	case len(args) == 1:
		payload = json.RawMessage(args[0])
	default:
		log.Fatal("usage: publish_result RESULT_JSON | --fail CODE MESSAGE [DETAILS_JSON] < job.json")
	}
	client, err := pubsub.NewClient(ctx, os.Getenv("GOOGLE_CLOUD_PROJECT"))
	if err != nil {
		log.Fatalf("pubsub.NewClient: %v", err)
	}
	defer client.Close()
	topic := os.Getenv("RELAY_TOPIC")
	if topic == "" {
		topic = "workflows-callback-relay"
	}
	id, err := publish(ctx, client, topic, job, payload)
	if err != nil {
		log.Fatalf("publishing to %s: %v", topic, err)
	}
	fmt.Println(id)
}
