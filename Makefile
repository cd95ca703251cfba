# couponrush: the two commands a newcomer needs, and a few more.
.PHONY: demo test bench backends-up backends-down crds

## The demo: backends up, a 1,000-coupon round, issuer and consumer, the seed spike, a report.
demo:
	e2e/demo.sh

## Every test tier, with all set-up (what CI runs).
test:
	e2e/test.sh

## The benchmark report (every strategy: the seed spike, the admission path and the
## sold-out path, beside the machine's ceiling, with couponrush-load as the generator);
## writes bench/results/<date>.md. About 8 minutes. Then one issuer and one consumer
## in a container with the CPU and memory limits the operator gives a pod (bench/pod.sh,
## about 6 minutes; its section is appended to that report), and the operator with 100 and
## 500 events at once (bench/scale.sh, a few minutes more).
bench:
	bench/run.sh
	APPEND_TO="$$(ls -t bench/results/*.md | head -1)" bench/pod.sh
	bench/scale.sh

## Regenerate the CRD YAML (and the chart's copy) from the Rust types.
crds:
	cargo run -q -p couponrush-crds --bin crdgen > crds/couponevent.yaml
	cp crds/couponevent.yaml charts/couponrush/crds/couponevent.yaml

backends-up:
	local/backends.sh up

backends-down:
	local/backends.sh down
