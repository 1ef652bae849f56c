"""One module per group of related families; ``models.registry`` lists every row explicitly."""
