// cellpipe UI: table sorting and filtering
