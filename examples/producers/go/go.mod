module example.com/publish_result

go 1.23

require cloud.google.com/go/pubsub/v2 v2.0.0
