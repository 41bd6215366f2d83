"""The suite's fixtures come from the ``inbox_testkit.plugin`` pytest plugin (see there);
each directory's conftest adds only what is its own."""

pytest_plugins = ["inbox_testkit.plugin"]
