"""Sources and sinks. One module each; positions are ``<object key>#<line offset>`` (see positions)."""
