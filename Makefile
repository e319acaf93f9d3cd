# Thin wrappers around dev.sh (the one entry CI calls).
.PHONY: demo test setup
demo:
	bash dev.sh demo
test:
	bash dev.sh test
setup:
	bash dev.sh setup
