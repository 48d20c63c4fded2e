"""One reconcile of one ModelDeployment, in three steps: ``read`` a snapshot from the watch-fed
store, ``decide`` (pure) the actions, status and events, ``execute`` the actions."""
