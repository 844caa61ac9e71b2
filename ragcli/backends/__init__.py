"""Remote index targets. The local FAISS index lives in `ragcli.store`; a remote target module is
imported only when `--target` names it, and a missing optional extra says which one to install."""
