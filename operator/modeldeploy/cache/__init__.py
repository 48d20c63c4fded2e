"""The weight cache, in one place: claim naming (``naming``), the claim and download Job
(``objects``), what is complete, what is wanted and what to prune (``decide``), what the
cache's lifecycle says in the status (``status``), and which ModelDeployments use and own
which claim (``index``).

Every ModelDeployment of the same weights (hub, model id, revision) in a namespace uses one
PersistentVolumeClaim, owned by all of them and filled once by a download Job (owned by all of
them too); the claim records a finished download in an annotation and the Job is then removed.
"""
