"""Azure ML pipeline jobs: `type: pipeline` YAML whose steps are parallel and command jobs."""
