"""Google's Python streaming-pull subscriber, acking only: the reference beside
Tally's Pub/Sub intake in bench/pubsub.sh.

    python pubsub_drain.py PROJECT SUBSCRIPTION EVENTS   (PUBSUB_EMULATOR_HOST set)

The clock starts when the streaming pull is opened and stops when the callback
has acked the last message (default flow control: 1,000 outstanding messages).
"""

import sys
import threading
import time

from google.cloud import pubsub_v1


def main() -> None:
    project, subscription, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(project, subscription)
    lock = threading.Lock()
    done = threading.Event()
    count = 0

    def callback(message) -> None:
        nonlocal count
        message.ack()
        with lock:
            count += 1
            if count >= events:
                done.set()

    started = time.monotonic()
    future = subscriber.subscribe(path, callback=callback)
    finished = done.wait(timeout=900)
    elapsed = time.monotonic() - started
    future.cancel()
    try:
        future.result(timeout=10)
    except Exception:  # cancelled on purpose
        pass
    subscriber.close()
    if not finished:
        sys.exit(f"python streaming pull: only {count} of {events} messages arrived")
    print(f"python-streaming drained {count} messages of {subscription} in {elapsed:.2f} s: {count / elapsed:.0f} msg/s")


if __name__ == "__main__":
    main()
