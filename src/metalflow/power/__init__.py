"""BMC control: power, boot device, virtual media, behind one small driver Protocol."""
