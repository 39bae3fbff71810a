# ckpt.criu developer entry points. Every target sets the machine up first.
.PHONY: setup test demo bench sanity matrix lint unit integration targets docs clean

setup:
	@bash scripts/setup.sh

test: setup
	@bash scripts/test.sh

demo: setup
	@bash scripts/demo.sh

bench: setup
	@.venv/bin/python benchmarks/run.py

unit: setup
	@.venv/bin/python -m pytest -p no:cacheprovider tests/unit

integration: setup
	@.venv/bin/python -m pytest -p no:cacheprovider tests/system

targets: setup
	@bash scripts/targets.sh

lint: setup
	@.venv/bin/ansible-lint --offline

sanity: setup
	@bash scripts/sanity.sh

matrix: setup
	@bash scripts/matrix.sh

docs: setup
	@for m in fd_inspect binary_checksum criu_info dump restore page_server process_state unit_info inet_sockets service_address; do ANSIBLE_CONFIG=ansible.cfg .venv/bin/ansible-doc ckpt.criu.$$m >/dev/null || exit 1; done; echo "ansible-doc renders every module"

clean:
	rm -rf .build tests/output
