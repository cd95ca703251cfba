# couponrush: the two commands a newcomer needs, and a few more.
.PHONY: demo test backends-up backends-down crds

## The demo: backends up, a 1,000-coupon round, issuer and consumer, the seed spike, a report.
demo:
	e2e/demo.sh

## Every test tier, with all set-up (what CI runs).
test:
	e2e/test.sh

backends-up:
	e2e/backends.sh up

backends-down:
	e2e/backends.sh down
