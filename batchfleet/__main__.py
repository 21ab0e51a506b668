from batchfleet.cli import entry

entry()
